import { describe, expect, it } from "vitest";
import { bindingProblems, wantedBindings } from "./groupBindings.js";

const config = {
  TRANSFORM_GROUP: "transformers",
  SUBJECT: "files.input",
  SINK_GROUPS: ["file-producers", "s3-producers"],
  OUTPUT_SUBJECT: "files.processed",
};

describe("group bindings", () => {
  it("wants its own group on SUBJECT and every sink group on OUTPUT_SUBJECT", () => {
    expect(wantedBindings(config).map((b) => [b.group, b.subject, b.groupVariable])).toEqual([
      ["transformers", "files.input", "TRANSFORM_GROUP"],
      ["file-producers", "files.processed", "SINK_GROUPS"],
      ["s3-producers", "files.processed", "SINK_GROUPS"],
    ]);
  });

  it("accepts new groups and groups already on the wanted subject", () => {
    const existing = new Map([
      ["transformers", "files.input"],
      ["file-producers", "files.processed"],
    ]);
    expect(bindingProblems(wantedBindings(config), existing, "FILES")).toEqual([]);
  });

  it("names the group, the subject it is bound to and the variable to change, one problem per group", () => {
    const existing = new Map([
      ["transformers", "files.other"],
      ["file-producers", "files.input"],
    ]);
    const problems = bindingProblems(wantedBindings(config), existing, "FILES");
    expect(problems).toHaveLength(2);
    expect(problems[0]).toMatch(/^TRANSFORM_GROUP: group transformers is already bound to subject files\.other /);
    expect(problems[0]).toContain("on SUBJECT files.input");
    expect(problems[0]).toContain("change TRANSFORM_GROUP");
    expect(problems[1]).toMatch(/^SINK_GROUPS: group file-producers is already bound to subject files\.input /);
    expect(problems[1]).toContain("on OUTPUT_SUBJECT files.processed");
    expect(problems[1]).toContain("change SINK_GROUPS");
  });

  it("leaves a durable without a filter (reads everything) to provisioning", () => {
    expect(bindingProblems(wantedBindings(config), new Map([["transformers", undefined]]), "FILES")).toEqual([]);
  });
});

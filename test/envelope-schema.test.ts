import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { envelopeJsonSchema, HEADER_NAMES } from "@filerelay/core";

describe("docs/envelope.schema.json", () => {
  it("is the JSON Schema generated from the core zod schema (run `pnpm gen:schema` when this fails)", async () => {
    const committed = await readFile(new URL("../docs/envelope.schema.json", import.meta.url), "utf8");
    expect(JSON.parse(committed)).toEqual(envelopeJsonSchema());
  });

  it("documents every header in docs/envelope.md", async () => {
    const doc = await readFile(new URL("../docs/envelope.md", import.meta.url), "utf8");
    for (const name of HEADER_NAMES) expect(doc, `docs/envelope.md should mention ${name}`).toContain(`\`${name}\``);
  });
});

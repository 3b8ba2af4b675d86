import { describe, expect, it } from "vitest";
import { entriesOfWho, entryFilterSubject, entrySubject, groupWho, pathToken, subjectToken } from "./subjects.js";

const P = "filerelay.status.FILES";
const ID = "6f1c1b0e-2a39-5c1e-9d2b-0a4f1e9c7d11";

describe("ledger subjects", () => {
  it("keep plain values and digest anything a subject token cannot hold", () => {
    expect(subjectToken("api")).toBe("api");
    expect(subjectToken(ID)).toBe(ID);
    expect(subjectToken(null)).toBe("_");
    expect(subjectToken("")).toBe("_");
    // "_" itself would read as "none": digested.
    expect(subjectToken("_")).toMatch(/^~[0-9a-f]{24}$/);
    for (const hostile of ["a.b", "a b", "*", ">", "x".repeat(65), "ü"]) {
      expect(subjectToken(hostile)).toMatch(/^~[0-9a-f]{24}$/);
    }
    expect(subjectToken("a.b")).not.toBe(subjectToken("a.c"));
  });

  it("index an entry by id, writer, state, source, path, job and parent", () => {
    const s = entrySubject(P, {
      id: ID,
      who: groupWho("file-producers"),
      state: "delivered",
      source: "api",
      path: "in/a b.csv",
      jobId: null,
      parentId: undefined,
    });
    expect(s).toBe(`${P}.${ID}.g-file-producers.delivered.api.${pathToken("api", "in/a b.csv")}._._`);
    expect(s.split(".")).toHaveLength(10);
    // The same path under another source is another file.
    expect(pathToken("api", "a.csv")).not.toBe(pathToken("ftp", "a.csv"));
  });

  it("build the narrowest filter for a query, folding trailing wildcards into >", () => {
    expect(entryFilterSubject(P, {})).toBe(`${P}.>`);
    expect(entryFilterSubject(P, { id: ID })).toBe(`${P}.${ID}.>`);
    expect(entryFilterSubject(P, { state: "failed" })).toBe(`${P}.*.*.failed.>`);
    expect(entryFilterSubject(P, { who: "src", state: "error" })).toBe(`${P}.*.src.error.>`);
    expect(entryFilterSubject(P, { source: "api", path: "a.csv" })).toBe(
      `${P}.*.*.*.api.${pathToken("api", "a.csv")}.>`,
    );
    expect(entryFilterSubject(P, { job: "j1" })).toBe(`${P}.*.*.*.*.*.j1.>`);
    // The last token given: no `>` after it.
    expect(entryFilterSubject(P, { who: "src", parent: ID })).toBe(`${P}.*.src.*.*.*.*.${ID}`);
    // A path without its source cannot be digested: it is not filtered on.
    expect(entryFilterSubject(P, { path: "a.csv" })).toBe(`${P}.>`);
    expect(entriesOfWho(P, ID, "src")).toBe(`${P}.${ID}.src.>`);
  });
});

import { describe, expect, it } from "vitest";
import { foldRecord, parseEntry, rollUp, type GroupEntry, type SourceEntry } from "./record.js";

const facts = {
  id: "id-1",
  source: "api",
  subject: "in/a.csv",
  filename: "a.csv",
  size: 10,
  sha256: "ab".repeat(32),
  contentType: "text/csv",
  jobId: null,
  parentId: null,
};
const src = (state: SourceEntry["state"], at: string, over: Partial<SourceEntry> = {}): SourceEntry => ({
  kind: "source",
  ...facts,
  at,
  by: "consumer",
  state,
  groups: ["fs", "s3"],
  ...over,
});
const grp = (group: string, state: GroupEntry["state"], at: string, over: Partial<GroupEntry> = {}): GroupEntry => ({
  kind: "group",
  ...facts,
  at,
  by: "producer",
  group,
  state,
  attempts: 1,
  ...over,
});

describe("rollUp", () => {
  it.each([
    ["source gave up", "error", {}, ["fs"], "error"],
    ["a group dead-lettered", "published", { fs: "delivered", s3: "failed" }, ["fs", "s3"], "failed"],
    ["every expected group delivered", "published", { fs: "delivered", s3: "delivered" }, ["fs", "s3"], "delivered"],
    ["one of two delivered", "published", { fs: "delivered" }, ["fs", "s3"], "published"],
    ["a group still writing", "published", { fs: "in_progress" }, ["fs"], "published"],
    ["still uploading", "received", {}, ["fs"], "received"],
    ["source entry lost, groups delivered", undefined, { fs: "delivered" }, ["fs"], "delivered"],
    [
      "an extra group does not hold delivered back",
      "published",
      { fs: "delivered", x: "in_progress" },
      ["fs"],
      "delivered",
    ],
    ["no expected groups: those seen decide", "published", { x: "delivered" }, [], "delivered"],
  ] as const)("%s → %s", (_name, source, groups, expected, want) => {
    const deliveries = Object.fromEntries(Object.entries(groups).map(([g, state]) => [g, { state }]));
    expect(rollUp(source, deliveries, expected)).toBe(want);
  });
});

describe("foldRecord", () => {
  it("builds the DESIGN §8 record with locations, a timeline and progress", () => {
    const r = foldRecord(
      [
        src("published", "2026-12-01T10:00:01.000Z", { detectedAt: "2026-12-01T10:00:00.000Z" }),
        grp("fs", "delivered", "2026-12-01T10:00:02.000Z", { location: "file:///out/a.csv" }),
        grp("s3", "failed", "2026-12-01T10:00:03.000Z", { code: "S3_ACCESS_DENIED", reason: "denied", attempts: 5 }),
      ],
      [],
      ["child-1"],
    );
    expect(r).toMatchObject({
      id: "id-1",
      state: "failed",
      publishedAt: "2026-12-01T10:00:01.000Z",
      updatedAt: "2026-12-01T10:00:03.000Z",
      children: ["child-1"],
      progress: { bytes: 10, total: 10 },
      deliveries: {
        fs: { state: "delivered", location: "file:///out/a.csv", attempts: 1 },
        s3: { state: "failed", code: "S3_ACCESS_DENIED", reason: "denied", attempts: 5 },
      },
    });
    expect(r?.events.map((e) => `${e.event}${e.group ? `:${e.group}` : ""}`)).toEqual([
      "detected",
      "published",
      "delivered:fs",
      "failed:s3",
    ]);
  });

  it("lets the last entry of a writer win and shows in-progress bytes", () => {
    const r = foldRecord(
      [
        src("published", "2026-12-01T10:00:01.000Z"),
        grp("fs", "in_progress", "2026-12-01T10:00:02.000Z", { bytes: 4 }),
      ],
      [],
    );
    expect(r?.state).toBe("published");
    expect(r?.progress).toEqual({ bytes: 4, total: 10 });
    const later = foldRecord(
      [
        src("published", "2026-12-01T10:00:01.000Z"),
        grp("fs", "failed", "2026-12-01T10:00:02.000Z", { code: "X" }),
        grp("fs", "delivered", "2026-12-01T10:00:09.000Z"),
        grp("s3", "delivered", "2026-12-01T10:00:09.000Z"),
      ],
      [],
    );
    expect(later?.state).toBe("delivered");
  });

  it("uses the reader's groups when the source entry is missing", () => {
    const entries = [grp("fs", "delivered", "2026-12-01T10:00:02.000Z")];
    expect(foldRecord(entries, ["fs", "s3"])?.state).toBe("published");
    expect(foldRecord(entries, ["fs"])?.state).toBe("delivered");
  });

  it("reports a source that gave up, with where the file went", () => {
    const r = foldRecord(
      [
        src("error", "2026-12-01T10:00:05.000Z", {
          code: "FILE_READ_FAILED",
          reason: "EACCES",
          attempts: 3,
          location: "file:///err/a.csv",
        }),
      ],
      [],
    );
    expect(r).toMatchObject({
      state: "error",
      error: { code: "FILE_READ_FAILED", reason: "EACCES", attempts: 3, location: "file:///err/a.csv" },
    });
  });

  it("has nothing to fold without entries", () => {
    expect(foldRecord([], ["fs"])).toBeUndefined();
  });
});

describe("parseEntry", () => {
  it("reads what the ledger writes and refuses anything else", () => {
    const e = src("published", "2026-12-01T10:00:01.000Z");
    expect(parseEntry(Buffer.from(JSON.stringify(e)))).toEqual(e);
    expect(parseEntry(Buffer.from("not json"))).toBeUndefined();
    expect(parseEntry(Buffer.from(JSON.stringify({ id: "x", at: "y", kind: "other" })))).toBeUndefined();
    expect(parseEntry(Buffer.from("null"))).toBeUndefined();
  });
});

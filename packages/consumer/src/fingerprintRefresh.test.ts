import { describe, expect, it } from "vitest";
import { dueRecords } from "./fingerprintRefresh.js";
import { SettledFiles } from "./settledFiles.js";
import type { TrackedFile } from "./trackedFile.js";

const fp = (n: number) => n.toString(16).padStart(64, "0");

function tracked(n: number, extra: Partial<TrackedFile> = {}): TrackedFile {
  return {
    rel: `w/${n}.csv`,
    size: n,
    mtimeMs: 1,
    ino: n,
    ctimeMs: 1,
    state: "done",
    gen: 0,
    observedAt: 0,
    detectedAt: new Date(0),
    attempts: 0,
    fingerprint: fp(n),
    recordedAt: n,
    seenInScan: 1,
    ...extra,
  };
}

function settledWith(...ns: number[]): SettledFiles {
  const s = new SettledFiles();
  for (const n of ns) {
    s.set(`s/${n}.csv`, {
      size: n,
      mtimeMs: 1.5,
      ino: n,
      ctimeMs: 1,
      state: "done",
      fingerprint: fp(n),
      recordedAt: n,
      seenInScan: 1,
    });
  }
  return s;
}

describe("dueRecords (which fingerprint records a leave-in-place source rewrites)", () => {
  it("yields the due files of the window first (with their paths), then the due settled records", () => {
    const window = [tracked(1), tracked(9), tracked(2, { state: "active" }), tracked(3, { fingerprint: undefined })];
    const due = [...dueRecords(window, settledWith(4, 5, 20), 10)];
    expect(due.map((d) => [d.fingerprint, d.path, d.size])).toEqual([
      [fp(1), "w/1.csv", 1],
      [fp(9), "w/9.csv", 9],
      [fp(4), "", 4],
      [fp(5), "", 5],
    ]);
  });

  it("notes the rewrite where the record lives, so the next walk skips it", () => {
    const window = [tracked(1)];
    const settled = settledWith(4);
    for (const d of dueRecords(window, settled, 10)) d.done(50);
    expect(window[0]!.recordedAt).toBe(50);
    expect([...dueRecords(window, settled, 10)]).toEqual([]);
  });

  it("checks a window file again when its turn comes (changed since the walk began: skipped)", () => {
    const a = tracked(1);
    const b = tracked(2);
    const it = dueRecords([a, b], settledWith(), 10);
    expect(it.next().value?.fingerprint).toBe(fp(1));
    b.state = "waiting";
    expect(it.next().done).toBe(true);
  });
});

import { describe, expect, it } from "vitest";
import { pathKey, SettledFiles, type SettledRecord } from "./settledFiles.js";

const fp = (n: number) => n.toString(16).padStart(64, "0");
const rec = (n: number, extra: Partial<SettledRecord> = {}): SettledRecord => ({
  size: n,
  mtimeMs: 1_700_000_000_000 + n + 0.5,
  ino: 1000 + n,
  ctimeMs: 1_700_000_000_000 + n,
  state: "done",
  fingerprint: fp(n),
  recordedAt: n,
  seenInScan: 1,
  ...extra,
});

describe("pathKey", () => {
  it("is a stable integer of at most 53 bits, different for near-identical paths", () => {
    expect(pathKey("a/b.txt")).toBe(pathKey("a/b.txt"));
    expect(Number.isSafeInteger(pathKey("x"))).toBe(true);
    const keys = new Set<number>();
    for (let i = 0; i < 100_000; i++) keys.add(pathKey(`d${i % 100}/f${i}.txt`));
    expect(keys.size).toBe(100_000);
  });
});

describe("SettledFiles", () => {
  it("remembers identity, state and fingerprint per path, through growth and removals (checked against a Map)", () => {
    const s = new SettledFiles(4);
    const model = new Map<string, SettledRecord>();
    let seed = 7;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let step = 0; step < 20_000; step++) {
      const n = rand(3000);
      const rel = `dir${n % 17}/file-${n}.csv`;
      if (rand(3) === 0) {
        expect(s.delete(rel)?.size).toBe(model.get(rel)?.size);
        model.delete(rel);
      } else {
        const r = rec(n, rand(5) === 0 ? { state: "failed", fingerprint: undefined } : {});
        s.set(rel, r);
        model.set(rel, r);
      }
    }
    expect(s.size).toBe(model.size);
    for (const [rel, r] of model) {
      const v = s.get(rel)!;
      expect(v).toMatchObject({ size: r.size, mtimeMs: r.mtimeMs, ino: r.ino, ctimeMs: r.ctimeMs, state: r.state });
      expect(v.fingerprint).toBe(r.state === "done" ? r.fingerprint : undefined);
    }
    for (let n = 0; n < 3000; n++) {
      const rel = `dir${n % 17}/file-${n}.csv`;
      expect(s.has(rel)).toBe(model.has(rel));
    }
    const counts = s.counts();
    expect(counts.done + counts.failed).toBe(model.size);
  });

  it("a sweep forgets what a poll did not see, and hands each such file over once", () => {
    const s = new SettledFiles();
    for (let n = 0; n < 1000; n++) s.set(`f${n}`, rec(n));
    for (let n = 0; n < 1000; n += 2) s.markSeen(s.get(`f${n}`)!.key, 2);
    const gone: number[] = [];
    s.sweep(2, (v) => gone.push(v.size));
    expect(gone.sort((a, b) => a - b)).toEqual(Array.from({ length: 500 }, (_, k) => 2 * k + 1));
    expect(s.size).toBe(500);
    expect(s.has("f0")).toBe(true);
    expect(s.has("f1")).toBe(false);
  });

  it("lists done files whose fingerprint record is due for a refresh, and takes the new time", () => {
    const s = new SettledFiles();
    for (let n = 0; n < 10; n++) s.set(`f${n}`, rec(n));
    s.set("failed", rec(0, { state: "failed", fingerprint: undefined }));
    const due = [...s.dueForRefresh(5)];
    expect(due.map((v) => v.fingerprint)).toEqual([0, 1, 2, 3, 4].map(fp));
    s.setRecordedAt(due[0]!.key, 100);
    expect([...s.dueForRefresh(5)].length).toBe(4);
  });
});

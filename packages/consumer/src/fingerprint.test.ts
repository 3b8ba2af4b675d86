import { describe, expect, it } from "vitest";
import { computeFingerprint } from "./fingerprint.js";

const base = { head: Buffer.from("hello"), size: 5, mtimeMs: 1_700_000_000_123.25, source: "api", relPath: "a/b.txt" };

describe("computeFingerprint", () => {
  it("is stable for the same version and a 64-hex KV key", () => {
    const fp = computeFingerprint(base);
    expect(fp).toMatch(/^[0-9a-f]{64}$/);
    expect(computeFingerprint({ ...base, head: Buffer.from("hello") })).toBe(fp);
  });

  it("changes with the head, size, mtime, source or path", () => {
    const fp = computeFingerprint(base);
    const variants = [
      { ...base, head: Buffer.from("hellO") },
      { ...base, size: 6 },
      { ...base, mtimeMs: base.mtimeMs + 0.001 },
      { ...base, source: "api2" },
      { ...base, relPath: "a/b.txt2" },
      // Field boundaries cannot be shifted into each other.
      { ...base, source: "api\u0000a", relPath: "b.txt" },
    ];
    const all = new Set([fp, ...variants.map(computeFingerprint)]);
    expect(all.size).toBe(variants.length + 1);
  });
});

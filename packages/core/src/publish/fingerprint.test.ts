import { describe, expect, it } from "vitest";
import { computeFingerprint } from "./fingerprint.js";

const base = {
  head: Buffer.from("hello"),
  size: 5,
  mtimeMs: 1_700_000_000_123.25,
  ino: 4242,
  ctimeMs: 1_700_000_000_456.5,
  source: "api",
  relPath: "a/b.txt",
};

describe("computeFingerprint", () => {
  it("is stable for the same version and a 64-hex KV key", () => {
    const fp = computeFingerprint(base);
    expect(fp).toMatch(/^[0-9a-f]{64}$/);
    expect(computeFingerprint({ ...base, head: Buffer.from("hello") })).toBe(fp);
  });

  it("changes with the head, size, mtime, inode, ctime, source or path", () => {
    const fp = computeFingerprint(base);
    const variants = [
      { ...base, head: Buffer.from("hellO") },
      { ...base, size: 6 },
      { ...base, mtimeMs: base.mtimeMs + 0.001 },
      // A copy that keeps size, mtime and head (cp -p, rsync -t) still gets a new inode or ctime.
      { ...base, ino: 4243 },
      { ...base, ctimeMs: base.ctimeMs + 0.001 },
      { ...base, source: "api2" },
      { ...base, relPath: "a/b.txt2" },
      // Field boundaries cannot be shifted into each other.
      { ...base, source: "api\u0000a", relPath: "b.txt" },
    ];
    const all = new Set([fp, ...variants.map(computeFingerprint)]);
    expect(all.size).toBe(variants.length + 1);
  });

  it("uses the whole content's SHA-256 when it is known, so versions differing past the head differ", () => {
    const a = computeFingerprint({ ...base, sha256: "a".repeat(64) });
    const b = computeFingerprint({ ...base, sha256: "b".repeat(64) });
    expect(a).not.toBe(b);
    expect(a).not.toBe(computeFingerprint(base));
  });
});

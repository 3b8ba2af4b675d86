import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { silentLogger } from "@filerelay/core/internal";
import { ancestorDirs, createEmptyDirPruner, emptiedDirVerdict } from "./emptyDirs.js";

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "empty-dirs-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const age = async (rel: string, ms: number) => {
  const t = new Date(Date.now() - ms);
  await utimes(join(root, rel), t, t);
};

describe("emptied input subdirectories", () => {
  it("decides from emptiness and age alone", () => {
    const base = { isDirectory: true, entries: 0, ageMs: 5000, minAgeMs: 2000 };
    expect(emptiedDirVerdict(base)).toBe("remove");
    expect(emptiedDirVerdict({ ...base, ageMs: 1999 })).toBe("wait");
    expect(emptiedDirVerdict({ ...base, entries: 1 })).toBe("forget");
    expect(emptiedDirVerdict({ ...base, isDirectory: false })).toBe("forget");
  });

  it("lists the ancestors of a relative path, deepest first, never the root", () => {
    expect(ancestorDirs("a/b/c.txt")).toEqual(["a/b", "a"]);
    expect(ancestorDirs("top.txt")).toEqual([]);
  });

  it("removes noted directories once empty for long enough, deepest first; keeps busy, young and unnoted ones", async () => {
    for (const d of ["a/b", "busy", "young", "made-by-operator"]) await mkdir(join(root, d), { recursive: true });
    await writeFile(join(root, "busy", "new.txt"), "x");
    const pruner = createEmptyDirPruner({ root, minAgeMs: 2000, log: silentLogger() });
    for (const f of ["a/b/1.txt", "busy/1.txt", "young/1.txt"]) pruner.noteEmptied(f);
    await age("a/b", 10_000);
    await age("a", 10_000);
    await age("busy", 10_000);
    await age("made-by-operator", 10_000);
    // a/b goes; removing it changes a's mtime, so a waits for the next run.
    expect(await pruner.prune()).toBe(1);
    expect((await readdir(root)).sort()).toEqual(["a", "busy", "made-by-operator", "young"]);
    await age("a", 10_000);
    await age("young", 10_000);
    expect(await pruner.prune()).toBe(2);
    expect((await readdir(root)).sort()).toEqual(["busy", "made-by-operator"]);
    // The root itself is never a candidate.
    pruner.noteEmptied("top.txt");
    expect(await pruner.prune()).toBe(0);
    expect((await readdir(join(root, ".."))).includes(root.split("/").pop()!)).toBe(true);
  });
});

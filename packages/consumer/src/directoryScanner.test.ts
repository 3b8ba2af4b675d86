import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DirectoryScanner, toDeepPattern } from "./directoryScanner.js";

let root: string;
let input: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "scanner-"));
  input = join(root, "in");
  await mkdir(input);
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

async function put(rel: string, data = "x"): Promise<void> {
  const p = join(input, rel);
  await mkdir(dirname(p), { recursive: true });
  await writeFile(p, data);
}

function scanner(extra: Partial<ConstructorParameters<typeof DirectoryScanner>[0]> = {}): DirectoryScanner {
  return new DirectoryScanner({
    inputDir: input,
    filePattern: "**/*",
    excludePatterns: [],
    followSymlinks: false,
    excludedDirs: [],
    ...extra,
  });
}

describe("DirectoryScanner", () => {
  it("normalizes patterns: no '/' means any depth", () => {
    expect(toDeepPattern("*.csv")).toBe("**/*.csv");
    expect(toDeepPattern("./reports/*.csv")).toBe("reports/*.csv");
    expect(toDeepPattern("tmp/")).toBe("tmp/**");
  });

  it("lists files recursively, skipping dotfiles, temp names, excludes and ARCHIVE_DIR/ERROR_DIR inside INPUT_DIR", async () => {
    for (const rel of [
      "a.csv",
      "deep/er/b.csv",
      "c.txt",
      "x.bak",
      "deep/y.bak",
      ".hidden",
      ".dir/z.csv",
      "d.tmp",
      "e.part",
      "f.partial",
      "g.crdownload",
      "h.swp",
      "archive/2026-01-01/old.csv",
      "errors/2026-01-01/bad.csv",
    ]) {
      await put(rel);
    }
    const s = scanner({
      excludePatterns: ["*.bak"],
      excludedDirs: [join(input, "archive"), join(input, "errors"), join(root, "elsewhere")],
    });
    const result = await s.scan();
    expect(result.files.map((f) => f.rel).sort()).toEqual(["a.csv", "c.txt", "deep/er/b.csv"]);
    expect(s.isIgnoredPath("archive/2026-01-01/old.csv")).toBe(true);
    expect(s.isIgnoredPath("deep/.x")).toBe(true);
    expect(s.isIgnoredPath("deep/file.part")).toBe(true);
    expect(s.isIgnoredPath("deep/file.csv")).toBe(false);

    const csvOnly = await scanner({ filePattern: "*.csv" }).scan();
    expect(csvOnly.files.map((f) => f.rel).sort()).toEqual([
      "a.csv",
      "archive/2026-01-01/old.csv",
      "deep/er/b.csv",
      "errors/2026-01-01/bad.csv",
    ]);
  });

  it("a light scan stats only paths it is not told it knows", async () => {
    await put("known.txt", "k");
    await put("sub/new.txt", "new!");
    const result = await scanner().scan({ isKnown: (rel) => rel === "known.txt" });
    expect(result.known).toEqual(["known.txt"]);
    expect(result.files.map((f) => [f.rel, f.size])).toEqual([["sub/new.txt", 4]]);
  });

  it("reports sizes and separates ready markers from files", async () => {
    await put("data.csv", "12345");
    await put("data.csv.done", "");
    await put("other.csv", "1");
    const result = await scanner({ readyMarkerSuffix: ".done" }).scan();
    expect(result.files.map((f) => [f.rel, f.size]).sort()).toEqual([
      ["data.csv", 5],
      ["other.csv", 1],
    ]);
    expect([...result.markers]).toEqual(["data.csv"]);
  });

  it("skips symlinks unless FOLLOW_SYMLINKS; then refuses those resolving outside INPUT_DIR and never enters linked dirs", async () => {
    await writeFile(join(root, "outside.txt"), "secret");
    await put("real/inside.txt", "inside");
    await symlink(join(root, "outside.txt"), join(input, "out-link.txt"));
    await symlink(join(input, "real/inside.txt"), join(input, "in-link.txt"));
    await mkdir(join(root, "outdir"));
    await writeFile(join(root, "outdir", "f.txt"), "f");
    await symlink(join(root, "outdir"), join(input, "dir-link"));

    const off = await scanner().scan();
    expect(off.files.map((f) => f.rel).sort()).toEqual(["real/inside.txt"]);
    expect(off.skipped.map((s) => s.rel).sort()).toEqual(["dir-link", "in-link.txt", "out-link.txt"]);

    const on = await scanner({ followSymlinks: true }).scan();
    const byRel = new Map(on.files.map((f) => [f.rel, f]));
    expect([...byRel.keys()].sort()).toEqual(["in-link.txt", "out-link.txt", "real/inside.txt"]);
    expect(byRel.get("out-link.txt")?.refused).toMatch(/outside INPUT_DIR/);
    expect(byRel.get("in-link.txt")).toMatchObject({ size: 6, target: join(input, "real/inside.txt") });
    expect(on.skipped.map((s) => s.rel)).toEqual(["dir-link"]);
  });
});

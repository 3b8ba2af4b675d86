import { mkdir, mkdtemp, rm, symlink, unlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import fg from "fast-glob";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ALWAYS_SKIPPED_EXTENSIONS, DirectoryScanner, toDeepPattern } from "./directoryScanner.js";

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

  it("selects what fast-glob selects, for every kind of pattern", async () => {
    const rels = [
      "a.csv",
      "b.CSV",
      "c.txt",
      "x.bak",
      "deep/er/b.csv",
      "deep/y.bak",
      "deep/er/est/z.json",
      "reports/2026/r.csv",
      "reports/r.csv",
      "reports/skip/s.csv",
      "tmp/t.csv",
      ".hidden",
      ".dir/z.csv",
      "sub/.dot.csv",
      "sub/.inner/w.csv",
      "d.tmp",
      "e.part",
      "name with spaces [1].csv",
      "brace{1}.csv",
      "ünïcode/ä.csv",
      "archive/2026-01-01/old.csv",
      "data.csv.done",
      "sub/data2.csv.done",
    ];
    for (const rel of rels) await put(rel);
    const cases: { filePattern: string; excludePatterns?: string[]; readyMarkerSuffix?: string }[] = [
      { filePattern: "**/*" },
      { filePattern: "*" },
      { filePattern: "*.csv" },
      { filePattern: "*.{csv,json}" },
      { filePattern: "reports/**/*.csv" },
      { filePattern: "reports/*.csv", excludePatterns: ["reports/skip/"] },
      { filePattern: "*.csv", excludePatterns: ["tmp/", "*.bak", "deep/**/est/**"] },
      { filePattern: "@(a|c).*" },
      { filePattern: "!(*.bak)" },
      { filePattern: "[ab].*" },
      { filePattern: ".*" },
      { filePattern: "sub/.*" },
      { filePattern: "**/.inner/*" },
      { filePattern: "*.CSV" },
      { filePattern: "*", readyMarkerSuffix: ".done" },
      { filePattern: "*.csv", excludePatterns: [join(input, "tmp") + "/**"] },
    ];
    for (const c of cases) {
      const s = scanner({ ...c, excludePatterns: c.excludePatterns ?? [], excludedDirs: [join(input, "archive")] });
      const result = await s.scan();
      const ours = [...result.files.map((f) => f.rel), ...[...result.markers].map((m) => `${m}${c.readyMarkerSuffix}`)];
      // What the scanner selected with fast-glob before it walked the tree itself.
      const patterns = [toDeepPattern(c.filePattern)];
      if (c.readyMarkerSuffix) patterns.push(`**/*${fg.escapePath(c.readyMarkerSuffix)}`);
      const theirs = await fg(patterns, {
        cwd: input,
        dot: false,
        onlyFiles: true,
        ignore: [
          ...ALWAYS_SKIPPED_EXTENSIONS.map((ext) => `**/*${ext}`),
          ...(c.excludePatterns ?? []).map(toDeepPattern),
          "archive",
          "archive/**",
        ],
      });
      expect(ours.sort(), JSON.stringify(c)).toEqual(theirs.sort());
      for (const rel of rels) {
        const marker = c.readyMarkerSuffix !== undefined && rel.endsWith(c.readyMarkerSuffix);
        expect(s.isCandidate(rel), `${rel} ${JSON.stringify(c)}`).toBe(
          !marker && theirs.includes(rel) && !rel.split("/").some((seg) => seg.startsWith(".")),
        );
      }
    }
  });

  it("a poll stats known paths and returns unchanged ones in `unchanged` (the caller's objects), changed ones in `files`", async () => {
    await put("same.txt", "same");
    await put("grown.txt", "a");
    await put("touched.txt", "t");
    await put("replaced.txt", "r");
    await put("gone.txt", "g");
    await put("d/new.txt", "new");
    await put("skip.bak", "b");
    const s = scanner({ excludePatterns: ["*.bak"] });
    const first = await s.scan();
    const byRel = new Map(first.files.map((f) => [f.rel, f]));
    expect([...byRel.keys()].sort()).toEqual([
      "d/new.txt",
      "gone.txt",
      "grown.txt",
      "replaced.txt",
      "same.txt",
      "touched.txt",
    ]);
    byRel.delete("d/new.txt");
    await writeFile(join(input, "grown.txt"), "ab");
    await utimes(join(input, "touched.txt"), new Date(), new Date(Date.now() + 5000));
    await unlink(join(input, "replaced.txt"));
    await put("replaced.txt", "r");
    await unlink(join(input, "gone.txt"));
    const poll = await s.scan({ known: (rel) => byRel.get(rel) });
    expect(poll.known).toEqual([]);
    expect(poll.unchanged).toEqual([byRel.get("same.txt")]);
    expect(poll.files.map((f) => f.rel).sort()).toEqual(["d/new.txt", "grown.txt", "replaced.txt", "touched.txt"]);
    expect(poll.files.find((f) => f.rel === "grown.txt")?.size).toBe(2);
    expect(poll.dirs.sort()).toEqual(["", "d"]);
  });
});

describe("DirectoryScanner.walk", () => {
  it("reads a tree in bounded steps that resume where the last one stopped, each file once", async () => {
    for (let i = 0; i < 50; i++) await put(`d${i % 5}/f${i}.txt`);
    for (let i = 0; i < 30; i++) await put(`flat${i}.txt`);
    const walk = scanner().walk();
    const seen: string[] = [];
    let steps = 0;
    while (!walk.done) {
      const r = await walk.step(7);
      // A step reads at most 7 entries (directories count too), so it returns at most 7 files.
      expect(r.files.length).toBeLessThanOrEqual(7);
      seen.push(...r.files.map((f) => f.rel));
      steps++;
    }
    expect(steps).toBeGreaterThanOrEqual(Math.ceil(85 / 7));
    expect(seen.length).toBe(80);
    expect(new Set(seen).size).toBe(80);
    await walk.close();
  });

  it("takes files added to a directory not yet read, and directories pushed while it runs", async () => {
    await put("a/1.txt");
    await put("b/2.txt");
    const walk = scanner().walk({}, []);
    walk.push("a", true);
    const first = await walk.step(100);
    expect(first.files.map((f) => f.rel)).toEqual(["a/1.txt"]);
    expect(walk.done).toBe(true);
    await put("b/3.txt");
    walk.push("b", false);
    const second = await walk.step(100);
    expect(second.files.map((f) => f.rel).sort()).toEqual(["b/2.txt", "b/3.txt"]);
    expect(second.dirs).toEqual(["b"]);
  });

  it("a shallow read does not enter subdirectories; closing abandons the rest", async () => {
    await put("top/x.txt");
    await put("top/sub/y.txt");
    const shallow = scanner().walk({}, []);
    shallow.push("top", false);
    const r = await shallow.step(100);
    expect(r.files.map((f) => f.rel)).toEqual(["top/x.txt"]);
    expect(shallow.done).toBe(true);

    const walk = scanner().walk();
    await walk.step(1);
    await walk.close();
    expect(walk.done).toBe(true);
  });
});

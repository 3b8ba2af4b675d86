import { existsSync } from "node:fs";
import { link, mkdir, mkdtemp, readFile, readdir, rm, symlink, readlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { writeJsonAtomic } from "@filerelay/core/internal";
import { moveNoClobber } from "./disposer.js";

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "disposer-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("disposer", () => {
  it("finishes a move a crash interrupted between link and unlink, instead of archiving a second copy", async () => {
    // Seen in the chaos run: the consumer SIGKILLed mid-archive left the source
    // and its archived link; the restarted consumer archived it again as -1.
    const dest = join(root, "archive", "2026-01-01", "f.json");
    const src = join(root, "f.json");
    await writeFile(src, "once");
    await mkdir(join(root, "archive", "2026-01-01"), { recursive: true });
    await link(src, dest); // the state a SIGKILL after link() leaves
    expect(await moveNoClobber(src, dest)).toBe(dest);
    expect(existsSync(src)).toBe(false);
    expect(await readdir(join(root, "archive", "2026-01-01"))).toEqual(["f.json"]);
    // A different file under the same name still gets a suffix.
    await writeFile(src, "other");
    expect(await moveNoClobber(src, dest)).toBe(join(root, "archive", "2026-01-01", "f-1.json"));
  });

  it("moves without ever overwriting, creating directories", async () => {
    const dest = join(root, "archive", "2026-01-01", "sub", "f.txt");
    const finals: string[] = [];
    for (const content of ["one", "two", "three"]) {
      const src = join(root, "f.txt");
      await writeFile(src, content);
      finals.push(await moveNoClobber(src, dest));
      expect(existsSync(src)).toBe(false);
    }
    expect(finals).toEqual([
      dest,
      join(root, "archive/2026-01-01/sub/f-1.txt"),
      join(root, "archive/2026-01-01/sub/f-2.txt"),
    ]);
    expect(await Promise.all(finals.map((f) => readFile(f, "utf8")))).toEqual(["one", "two", "three"]);
  });

  it("a vanished source is reported as ENOENT", async () => {
    const err = await moveNoClobber(join(root, "nope"), join(root, "x", "nope")).catch((e: unknown) => e);
    expect((err as NodeJS.ErrnoException).code).toBe("ENOENT");
  });

  it.skipIf(!existsSync("/dev/shm"))(
    "moves across file systems by copy + fsync + link, leaving no temp file",
    async () => {
      const other = await mkdtemp("/dev/shm/disposer-");
      try {
        const data = Buffer.alloc(300_000, 7);
        const src = join(root, "big.bin");
        await writeFile(src, data);
        await mkdir(join(other, "d"));
        await writeFile(join(other, "d", "big.bin"), "occupied");
        const final = await moveNoClobber(src, join(other, "d", "big.bin"));
        expect(final).toBe(join(other, "d", "big-1.bin"));
        expect((await readFile(final)).equals(data)).toBe(true);
        expect(await readFile(join(other, "d", "big.bin"), "utf8")).toBe("occupied");
        expect(existsSync(src)).toBe(false);
        expect((await readdir(join(other, "d"))).sort()).toEqual(["big-1.bin", "big.bin"]);

        // A symlink is moved as a link, not as its target's bytes.
        await writeFile(join(root, "target.txt"), "t");
        await symlink(join(root, "target.txt"), join(root, "link.txt"));
        const movedLink = await moveNoClobber(join(root, "link.txt"), join(other, "d", "link.txt"));
        expect(await readlink(movedLink)).toBe(join(root, "target.txt"));
      } finally {
        await rm(other, { recursive: true, force: true });
      }
    },
  );

  it("writes JSON atomically", async () => {
    const path = join(root, "x.error.json");
    await writeJsonAtomic(path, { code: "FILE_TOO_LARGE", attempts: 1 });
    expect(JSON.parse(await readFile(path, "utf8"))).toEqual({ code: "FILE_TOO_LARGE", attempts: 1 });
    expect(await readdir(root)).toEqual(["x.error.json"]);
  });
});

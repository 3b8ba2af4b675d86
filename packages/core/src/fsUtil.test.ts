import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { errnoCode, fsyncPath, makeDirectory, writeFileAtomic, writeJsonAtomic } from "./fsUtil.js";

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "fsutil-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("errnoCode", () => {
  it("reads the code of system errors only", async () => {
    const err = await readFile(join(root, "missing")).catch((e: unknown) => e);
    expect(errnoCode(err)).toBe("ENOENT");
    expect(errnoCode(new Error("x"))).toBeUndefined();
    expect(errnoCode(Object.assign(new Error("x"), { code: 42 }))).toBeUndefined();
    expect(errnoCode(undefined)).toBeUndefined();
    expect(errnoCode(null)).toBeUndefined();
  });
});

describe("writeFileAtomic", () => {
  it("writes strings, bytes and streams, replacing what was there, leaving no temp file", async () => {
    const path = join(root, "f.txt");
    await writeFile(path, "old");
    await writeFileAtomic(path, "text");
    expect(await readFile(path, "utf8")).toBe("text");
    await writeFileAtomic(path, Buffer.from("bytes"));
    expect(await readFile(path, "utf8")).toBe("bytes");
    await writeFileAtomic(path, Readable.from([Buffer.from("str"), Buffer.from("eam")]));
    expect(await readFile(path, "utf8")).toBe("stream");
    await writeJsonAtomic(join(root, "r.json"), { a: 1 });
    expect(await readFile(join(root, "r.json"), "utf8")).toBe('{\n  "a": 1\n}\n');
    expect((await readdir(root)).sort()).toEqual(["f.txt", "r.json"]);
  });

  it("keeps the old content and removes its temp file when the data fails", async () => {
    const path = join(root, "f.txt");
    await writeFile(path, "old");
    const failing = new Readable({
      read() {
        this.push("partial");
        this.destroy(new Error("payload failed"));
      },
    });
    await expect(writeFileAtomic(path, failing)).rejects.toThrow("payload failed");
    expect(await readFile(path, "utf8")).toBe("old");
    expect(await readdir(root)).toEqual(["f.txt"]);
  });

  it("fails when the directory does not exist", async () => {
    const err = await writeFileAtomic(join(root, "no", "f.txt"), "x").catch((e: unknown) => e);
    expect(errnoCode(err)).toBe("ENOENT");
  });
});

describe("fsyncPath", () => {
  it("syncs files and directories", async () => {
    await writeFile(join(root, "f"), "x");
    await fsyncPath(join(root, "f"));
    await fsyncPath(root);
    expect(errnoCode(await fsyncPath(join(root, "missing")).catch((e: unknown) => e))).toBe("ENOENT");
  });
});

describe("makeDirectory", () => {
  it("creates every missing component and accepts an existing directory", async () => {
    const deep = join(root, "a", "b", "c");
    await makeDirectory(deep);
    expect((await stat(deep)).isDirectory()).toBe(true);
    await makeDirectory(deep);
    await makeDirectory(root);
  });

  it("fails with ENOTDIR when a component is a file", async () => {
    await writeFile(join(root, "f"), "x");
    expect(errnoCode(await makeDirectory(join(root, "f")).catch((e: unknown) => e))).toBe("ENOTDIR");
    expect(errnoCode(await makeDirectory(join(root, "f", "sub")).catch((e: unknown) => e))).toBe("ENOTDIR");
  });

  it.runIf(existsSync("/proc/self"))(
    "settles with the error under /proc, where recursive mkdir never does",
    async () => {
      const err = await makeDirectory("/proc/filerelay-no-such/dir").catch((e: unknown) => e);
      expect(errnoCode(err)).toBe("ENOENT");
    },
  );
});

import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { HttpError } from "../httpError.js";
import { checkFolderSpelling, isInside, listJobFiles, resolveJobFolder } from "./jobFolder.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "job-folder-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function status(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "ok";
  } catch (err) {
    return err instanceof HttpError ? `${err.status} ${err.code}` : String(err);
  }
}

describe("job folders", () => {
  it("isInside compares whole path segments", () => {
    expect(isInside("/data/in", "/data/in")).toBe(true);
    expect(isInside("/data/in", "/data/in/x/y")).toBe(true);
    expect(isInside("/data/in", "/data/inbox")).toBe(false);
    expect(isInside("/data/in", "/data")).toBe(false);
  });

  it("refuses relative paths and any '..' by spelling", () => {
    expect(() => checkFolderSpelling("data/in")).toThrow(HttpError);
    expect(() => checkFolderSpelling("/data/in/../../etc")).toThrow(/'\.\.'/);
    expect(() => checkFolderSpelling("/data/in/x..y")).not.toThrow();
  });

  it("accepts folders under a root, refuses others and symlinks out (403), missing 404", async () => {
    const root = join(dir, "root");
    await mkdir(join(root, "a"), { recursive: true });
    await mkdir(join(dir, "outside"));
    await symlink(join(dir, "outside"), join(root, "out-link"));
    await symlink(join(root, "a"), join(root, "in-link"));
    expect(await status(resolveJobFolder([root], join(root, "a")))).toBe("ok");
    expect(await resolveJobFolder([root], join(root, "in-link"))).toBe(join(root, "a"));
    expect(await status(resolveJobFolder([root], join(dir, "outside")))).toBe("403 JOB_ROOT_REFUSED");
    expect(await status(resolveJobFolder([root], join(root, "out-link")))).toBe("403 JOB_ROOT_REFUSED");
    expect(await status(resolveJobFolder([root], join(root, "missing")))).toBe("404 NOT_FOUND");
    expect(await status(resolveJobFolder(undefined, join(root, "a")))).toBe("403 JOB_ROOT_REFUSED");
  });

  it("lists regular files matching the pattern, never through symlinks", async () => {
    await mkdir(join(dir, "x/y"), { recursive: true });
    await mkdir(join(dir, "elsewhere"));
    await writeFile(join(dir, "x/a.csv"), "a");
    await writeFile(join(dir, "x/y/b.csv"), "b");
    await writeFile(join(dir, "x/y/c.txt"), "c");
    await writeFile(join(dir, "x/.hidden.csv"), "h");
    await writeFile(join(dir, "elsewhere/secret.csv"), "s");
    await symlink(join(dir, "elsewhere"), join(dir, "x/linked-dir"));
    await symlink(join(dir, "elsewhere/secret.csv"), join(dir, "x/linked.csv"));
    expect(await listJobFiles(join(dir, "x"), "**/*.csv")).toEqual(["a.csv", "y/b.csv"]);
    expect(await listJobFiles(join(dir, "x"), "**/*")).toEqual(["a.csv", "y/b.csv", "y/c.txt"]);
  });
});

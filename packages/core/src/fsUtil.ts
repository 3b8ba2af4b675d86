import { randomBytes } from "node:crypto";
import { constants, createWriteStream } from "node:fs";
import { access, mkdir, open, rename, stat, unlink, writeFile } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";

/** The errno code of a Node.js fs/system error (`ENOENT`, `EEXIST`…), or undefined for anything else. */
export function errnoCode(err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException | null | undefined)?.code;
  return typeof code === "string" ? code : undefined;
}

/**
 * `mkdir -p` that always settles. Node's recursive mkdir never settles where
 * a pseudo filesystem refuses new entries (e.g. under /proc it retries ENOENT
 * forever at full CPU), so the missing components are found by walking up
 * (bounded by the path's depth) and created one at a time; the first failure
 * is thrown as is (ENOENT, EACCES, ENOTDIR, EROFS…).
 */
export async function makeDirectory(dir: string, options: { mode?: number } = {}): Promise<void> {
  const missing: string[] = [];
  let current = resolve(dir);
  for (;;) {
    let isDir: boolean;
    try {
      isDir = (await stat(current)).isDirectory();
    } catch (err) {
      const parent = dirname(current);
      if (errnoCode(err) !== "ENOENT" || parent === current) throw err;
      missing.push(current);
      current = parent;
      continue;
    }
    if (!isDir) {
      throw Object.assign(new Error(`ENOTDIR: not a directory, mkdir '${current}'`), {
        code: "ENOTDIR",
        path: current,
      });
    }
    break;
  }
  for (const part of missing.reverse()) {
    try {
      await mkdir(part, options.mode === undefined ? undefined : { mode: options.mode });
    } catch (err) {
      if (errnoCode(err) !== "EEXIST") throw err;
    }
  }
}

/** Who this process writes as, for messages about permissions. */
export function whoAmI(): string {
  const uid = process.getuid?.();
  const gid = process.getgid?.();
  return uid === undefined ? "this process" : `uid ${uid}${gid === undefined ? "" : ` gid ${gid}`}`;
}

/**
 * Why `root` cannot take output, or undefined when it can: it must be a
 * directory this process may create entries in. With `create`, a missing
 * directory is created first (at start-up); without, a missing one is a
 * problem (a readiness check must not create directories as a side effect).
 * The message starts with the path, for "<VARIABLE>: <message>".
 */
export async function writableDirectoryProblem(root: string, opts: { create: boolean }): Promise<string | undefined> {
  if (opts.create) {
    try {
      await makeDirectory(root);
    } catch (err) {
      const code = errnoCode(err) ?? "error";
      if (code === "ENOTDIR") return `${root} is not a directory (or a component of its path is a file)`;
      return `cannot create ${root} as ${whoAmI()} (${code})`;
    }
  }
  try {
    if (!(await stat(root)).isDirectory()) return `${root} is not a directory`;
  } catch (err) {
    const code = errnoCode(err) ?? "error";
    return code === "ENOENT" ? `${root} does not exist` : `cannot reach ${root} as ${whoAmI()} (${code})`;
  }
  try {
    await access(root, constants.W_OK | constants.X_OK);
  } catch (err) {
    const code = errnoCode(err) ?? "error";
    const hint = code === "EROFS" ? "a read-only filesystem" : "check its owner and mode, e.g. chown it to this user";
    return `${root} is not writable by ${whoAmI()} (${code}: ${hint})`;
  }
  return undefined;
}

/**
 * fsync of a file or a directory by path. After a rename, an fsync of the
 * directory is what makes the new name survive a power loss.
 */
export async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, constants.O_RDONLY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Writes `path` so that it holds either its old content or all of `data`,
 * never a part, even after a crash: a hidden temp name in the same directory
 * (created exclusively), fsync, rename over `path`, fsync of the directory.
 * The temp file is removed when anything fails.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array | Readable): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${randomBytes(6).toString("hex")}.tmp`);
  try {
    if (data instanceof Readable) await pipeline(data, createWriteStream(tmp, { flags: "wx" }));
    else await writeFile(tmp, data, { flag: "wx" });
    await fsyncPath(tmp);
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await fsyncPath(dir);
}

/** writeFileAtomic of `value` as indented JSON with a final newline. */
export function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  return writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`);
}

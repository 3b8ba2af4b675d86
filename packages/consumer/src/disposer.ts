import { randomBytes } from "node:crypto";
import { constants, linkSync, lstatSync, unlinkSync } from "node:fs";
import { copyFile, link, lstat, readlink, rename, symlink, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { errnoCode, fsyncPath, makeDirectory, withNumericSuffix } from "@filerelay/core/internal";

const createdDirs = new Set<string>();

async function ensureDir(dir: string): Promise<void> {
  if (createdDirs.has(dir)) return;
  await makeDirectory(dir);
  // Bounded: one entry per dated sub-directory in use.
  if (createdDirs.size > 10_000) createdDirs.clear();
  createdDirs.add(dir);
}

/** Codes meaning "this file system cannot hard-link": fall back to a checked rename. */
const NO_LINK = new Set(["EPERM", "ENOTSUP", "EOPNOTSUPP", "EMLINK", "ENOSYS"]);

/** The source path held another file than the one expected (replaced by a writer): nothing was moved. */
export class SourceReplacedError extends Error {
  override name = "SourceReplacedError";
  constructor(readonly path: string) {
    super(`${path} was replaced by another file; it was not moved`);
  }
}

export interface MoveOptions {
  /**
   * Move only the file with this inode: when the path holds another one (a
   * writer renamed a new version over it), nothing is moved and
   * SourceReplacedError is thrown.
   */
  expectIno?: number | undefined;
}

function inodeAt(path: string): number | undefined {
  return lstatSync(path, { throwIfNoEntry: false })?.ino;
}

/**
 * Moves `src` to `dest` without ever overwriting: on a clash the name gets a
 * numeric suffix (`-1`, `-2`, ...). Returns the final path. On one file system
 * a hard link claims the name atomically, then the source is unlinked; across
 * file systems the bytes are copied to a temporary name in the target
 * directory, fsynced, linked into place, and only then is the source removed.
 * With `expectIno`, the inode is checked after each step that could pick up a
 * replacement, so a newer version at `src` is never moved or removed.
 */
export async function moveNoClobber(src: string, dest: string, options: MoveOptions = {}): Promise<string> {
  const { expectIno } = options;
  await ensureDir(dirname(dest));
  let retriedDir = false;
  for (let n = 0; n < 100_000; n++) {
    const candidate = n === 0 ? dest : withNumericSuffix(dest, n);
    try {
      // Synchronous: two metadata calls of microseconds each on a local file
      // system, cheaper than two thread-pool round trips per archived file.
      linkSync(src, candidate);
      if (expectIno !== undefined) {
        if (inodeAt(candidate) !== expectIno) {
          // The link picked up a replacement: undo it, the original is not ours to move.
          unlinkSync(candidate);
          throw new SourceReplacedError(src);
        }
        // Replaced right after the link: ours is safe at `candidate`; the newer file stays.
        if (inodeAt(src) !== expectIno) return candidate;
      }
      unlinkSync(src);
      return candidate;
    } catch (err) {
      const code = errnoCode(err);
      if (code === "EEXIST") {
        // A move interrupted between link and unlink (a crash) left the source
        // and this name as one file: finish that move instead of archiving a
        // second copy under the next suffix.
        if ((await sameFile(src, candidate)) && (expectIno === undefined || inodeAt(src) === expectIno)) {
          await unlink(src);
          return candidate;
        }
        continue;
      }
      if (code === "ENOENT") {
        // The source vanished, or the target directory was removed behind our
        // back (it is cached as created): recreate it once, then give up.
        if (retriedDir) throw err;
        retriedDir = true;
        createdDirs.delete(dirname(dest));
        await ensureDir(dirname(dest));
        n--;
        continue;
      }
      if (code === "EXDEV") {
        const isLink = (await lstat(src)).isSymbolicLink();
        return isLink ? moveLinkAcross(src, dest) : copyAcross(src, dest, expectIno);
      }
      if (code !== undefined && NO_LINK.has(code)) return renameChecked(src, dest, expectIno);
      throw err;
    }
  }
  throw new Error(`no free name for ${dest}`);
}

/** Are both paths the same inode (hard links of one file)? */
async function sameFile(a: string, b: string): Promise<boolean> {
  try {
    const [sa, sb] = await Promise.all([lstat(a), lstat(b)]);
    return sa.isFile() && sa.ino === sb.ino && sa.dev === sb.dev;
  } catch {
    return false;
  }
}

async function freeName(dest: string, claim: (candidate: string) => Promise<void>): Promise<string> {
  for (let n = 0; n < 100_000; n++) {
    const candidate = n === 0 ? dest : withNumericSuffix(dest, n);
    try {
      await claim(candidate);
      return candidate;
    } catch (err) {
      if (errnoCode(err) !== "EEXIST") throw err;
    }
  }
  throw new Error(`no free name for ${dest}`);
}

async function copyAcross(src: string, dest: string, expectIno: number | undefined): Promise<string> {
  const dir = dirname(dest);
  const tmp = join(dir, `.${basename(dest)}.${randomBytes(6).toString("hex")}.tmp`);
  try {
    if (expectIno !== undefined && inodeAt(src) !== expectIno) throw new SourceReplacedError(src);
    await copyFile(src, tmp, constants.COPYFILE_EXCL);
    // Still the same file after the copy: the copy is of it, not of a replacement.
    if (expectIno !== undefined && inodeAt(src) !== expectIno) throw new SourceReplacedError(src);
    await fsyncPath(tmp);
    const final = await freeName(dest, async (candidate) => {
      try {
        await link(tmp, candidate);
      } catch (err) {
        const code = errnoCode(err);
        if (code === undefined || !NO_LINK.has(code)) throw err;
        await lstat(candidate).then(
          () => {
            throw Object.assign(new Error("exists"), { code: "EEXIST" });
          },
          () => rename(tmp, candidate),
        );
      }
    });
    await unlink(tmp).catch(() => undefined);
    await fsyncPath(dir).catch(() => undefined);
    await unlink(src);
    return final;
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

async function moveLinkAcross(src: string, dest: string): Promise<string> {
  const target = await readlink(src);
  const final = await freeName(dest, (candidate) => symlink(target, candidate));
  await unlink(src);
  return final;
}

/** For file systems without hard links: check, then rename (a narrow race, documented). */
async function renameChecked(src: string, dest: string, expectIno: number | undefined): Promise<string> {
  const final = await freeName(dest, async (candidate) => {
    const exists = await lstat(candidate).then(
      () => true,
      () => false,
    );
    if (exists) throw Object.assign(new Error("exists"), { code: "EEXIST" });
  });
  if (expectIno !== undefined && inodeAt(src) !== expectIno) throw new SourceReplacedError(src);
  await rename(src, final);
  return final;
}

/** Removes a file; a file already gone counts as removed. */
export async function removeFile(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if (errnoCode(err) !== "ENOENT") throw err;
  }
}

/** The `.error.json` written next to a file moved to ERROR_DIR (DESIGN §5). */
export interface ErrorRecord {
  /** Path relative to INPUT_DIR. */
  path: string;
  source: string;
  reason: string;
  code: string;
  attempts: number;
  firstAttemptAt: string;
  lastAttemptAt: string;
  size: number;
  mtime: string;
  fingerprint: string | null;
  fileId: string | null;
  movedAt: string;
}

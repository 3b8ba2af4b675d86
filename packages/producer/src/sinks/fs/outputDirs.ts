import { realpathSync } from "node:fs";
import { mkdir, realpath, rmdir } from "node:fs/promises";
import { isAbsolute, join, relative, sep } from "node:path";
import { errnoCode, makeDirectory, SinkError } from "@filerelay/core/internal";

/** Output directories inside OUTPUT_DIR, created on demand and never reached through a link leading outside. */
export interface OutputDirs {
  /** Makes sure `dir` exists inside the root; throws PATH_UNSAFE if it resolves outside. */
  ensure(dir: string): Promise<void>;
}

const MAX_KNOWN_DIRS = 10_000;

export function createOutputDirs(root: string): OutputDirs {
  /** Output directories known to exist: no mkdir per file (a removed one is recreated on ENOENT). */
  const knownDirs = new Set<string>();
  let realRoot: string | undefined;

  /**
   * A known directory costs one realpath (checked every time: it may have
   * been swapped for a link); an unknown one is created by createInside().
   */
  async function ensure(dir: string): Promise<void> {
    if (knownDirs.has(dir)) {
      try {
        await assertRealInside(dir);
        return;
      } catch (err) {
        if (errnoCode(err) !== "ENOENT") throw err;
        // Removed behind our back: create it again.
        knownDirs.delete(dir);
      }
    }
    await createInside(dir);
    await assertRealInside(dir);
    if (knownDirs.size >= MAX_KNOWN_DIRS) knownDirs.clear();
    knownDirs.add(dir);
  }

  /**
   * Creates `dir` one component at a time below the root, checking each one
   * (existing or just made) before going deeper: a component that is a link
   * leading outside (e.g. a date directory symlinked elsewhere) is refused
   * before anything is created through it, and one swapped for such a link
   * while we create it is removed again (it is empty: we just made it).
   */
  async function createInside(dir: string): Promise<void> {
    await makeDirectory(root);
    let current = root;
    for (const part of relative(root, dir).split(sep)) {
      if (part === "" || part === ".") continue;
      current = join(current, part);
      let created = false;
      try {
        await mkdir(current);
        created = true;
      } catch (err) {
        if (errnoCode(err) !== "EEXIST") throw err;
      }
      try {
        await assertRealInside(current);
      } catch (err) {
        if (created) await rmdir(current).catch(() => undefined);
        throw err;
      }
    }
  }

  async function assertRealInside(dir: string): Promise<void> {
    realRoot ??= await realpath(root);
    // Synchronous, like the other per-file metadata calls of this sink (lstat,
    // link, unlink): each takes microseconds on a local file system, while a
    // thread-pool round trip per call cost more CPU than the call itself.
    const realDir = realpathSync.native(dir);
    const rel = relative(realRoot, realDir);
    if (isAbsolute(rel) || rel === ".." || rel.startsWith(`..${sep}`)) {
      throw new SinkError(
        "PATH_UNSAFE",
        `output directory ${dir} resolves to ${realDir}, outside OUTPUT_DIR ${realRoot}`,
      );
    }
  }

  return { ensure };
}

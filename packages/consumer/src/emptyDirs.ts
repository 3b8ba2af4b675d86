import { lstat, readdir, rmdir } from "node:fs/promises";
import { join } from "node:path";
import { errnoCode, type Logger } from "@filerelay/core/internal";

/** What is known about a directory a file was moved or deleted from. */
export interface EmptiedDirFacts {
  /** A real directory (not a symlink, not gone). */
  isDirectory: boolean;
  entries: number;
  /** Time since its last change (mtime): a writer that just made it has not put its file in yet. */
  ageMs: number;
  minAgeMs: number;
}

/**
 * remove: empty and untouched for long enough; wait: empty but changed
 * recently (a writer may be about to use it); forget: in use again, or gone
 * (a file disposed of later notes it again).
 */
export function emptiedDirVerdict(f: EmptiedDirFacts): "remove" | "wait" | "forget" {
  if (!f.isDirectory || f.entries > 0) return "forget";
  return f.ageMs >= f.minAgeMs ? "remove" : "wait";
}

/** Every proper ancestor directory of `rel` (a '/'-separated path relative to the root), deepest first. */
export function ancestorDirs(rel: string): string[] {
  const parts = rel.split("/").slice(0, -1);
  const out: string[] = [];
  for (let i = parts.length; i > 0; i--) out.push(parts.slice(0, i).join("/"));
  return out;
}

export interface EmptyDirPrunerOptions {
  /** INPUT_DIR: never removed itself. */
  root: string;
  /** STABILITY_MS. */
  minAgeMs: number;
  log: Logger;
}

/** Bounded: directories noted and not yet judged (one entry per directory, not per file). */
const MAX_NOTED = 10_000;

/**
 * Subdirectories of INPUT_DIR that archiving or deleting left empty are
 * removed once they have stayed empty for STABILITY_MS, deepest first, so a
 * tree of dated drop folders does not pile up. Only directories a disposed
 * file came from are considered (an empty folder an operator made stays), and
 * rmdir(2) never removes a directory that is not empty.
 */
export function createEmptyDirPruner(options: EmptyDirPrunerOptions) {
  const { root, minAgeMs, log } = options;
  const noted = new Set<string>();
  let running: Promise<number> | undefined;

  async function judge(rel: string): Promise<"remove" | "wait" | "forget"> {
    const path = join(root, rel);
    try {
      const st = await lstat(path);
      const entries = st.isDirectory() ? (await readdir(path)).length : 0;
      return emptiedDirVerdict({ isDirectory: st.isDirectory(), entries, ageMs: Date.now() - st.mtimeMs, minAgeMs });
    } catch {
      return "forget";
    }
  }

  async function pruneOnce(): Promise<number> {
    let removed = 0;
    // Deepest first: a parent is empty only once its children are gone.
    const dirs = [...noted].sort((a, b) => b.split("/").length - a.split("/").length);
    for (const rel of dirs) {
      const verdict = await judge(rel);
      if (verdict === "wait") continue;
      noted.delete(rel);
      if (verdict === "forget") continue;
      try {
        await rmdir(join(root, rel));
        removed++;
        // Its parent may be empty now (judged again once it has stayed so for minAgeMs).
        const parent = ancestorDirs(rel)[0];
        if (parent !== undefined) noted.add(parent);
        log.debug({ dir: rel }, "removed an emptied input subdirectory");
      } catch (err) {
        // ENOTEMPTY: a writer just put a file in; ENOENT: someone else removed it.
        const code = errnoCode(err);
        if (code !== "ENOTEMPTY" && code !== "EEXIST" && code !== "ENOENT") {
          log.warn({ dir: rel, err: (err as Error).message }, "cannot remove an emptied input subdirectory");
        }
      }
    }
    return removed;
  }

  return {
    /** A file at `rel` was archived, deleted or moved to ERROR_DIR: its directories may now be empty. */
    noteEmptied(rel: string): void {
      if (noted.size >= MAX_NOTED) return;
      for (const dir of ancestorDirs(rel)) noted.add(dir);
    },
    /** Removes the noted directories that qualify; resolves to how many went. One run at a time. */
    prune(): Promise<number> {
      running ??= pruneOnce().finally(() => (running = undefined));
      return running;
    },
  };
}

export type EmptyDirPruner = ReturnType<typeof createEmptyDirPruner>;

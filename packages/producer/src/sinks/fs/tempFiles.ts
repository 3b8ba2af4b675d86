import { randomBytes } from "node:crypto";
import { readdir, stat, unlink, utimes } from "node:fs/promises";
import { basename, join } from "node:path";
import { errnoCode, type Logger } from "@filerelay/core/internal";

/**
 * Temp files: `.filerelay-<ce-id>.<instance>.<n>.tmp`, in the target
 * directory (so the final rename stays on one filesystem). `instance` is a
 * random id per sink, `n` a counter: unique across hosts, containers and pid
 * namespaces without a random draw per file. Output names never start with
 * '.', so they can never match. The older
 * `.filerelay-<ce-id>.<host>.<pid>.<random>.tmp` names match too (group 2 is
 * then undefined).
 *
 * Whether a temp file's writer is alive is told by the file itself: a live
 * writer touches each of its temp files every tempTouchMs, whether or not
 * bytes arrive, so one untouched for tempTtlMs was left by a writer that is
 * gone (crashed, killed, its host or pod replaced), wherever it ran.
 */
export const TEMP_FILE_PATTERN =
  /^\.filerelay-([0-9a-fA-F-]{36})\.(?:([0-9a-f]{16})\.[0-9a-z]+|[A-Za-z0-9-]*\.\d+\.[0-9a-z]+)\.tmp$/;

const SWEEP_MAX_ENTRIES = 200_000;
const SWEEP_MAX_DEPTH = 32;
const DEFAULT_STALE_TEMP_MS = 60 * 60 * 1000;
const DEFAULT_TEMP_TTL_MS = 30_000;
const DEFAULT_TEMP_TOUCH_MS = 5000;

/** Temp-file name number `seq` of sink `instance` for file version `id`. */
export function tempFileName(id: string, instance: string, seq: number): string {
  return `.filerelay-${id}.${instance}.${seq.toString(36)}.tmp`;
}

/** For tests and operators: is this a temp file name of ours? */
export function isTempFileName(name: string): boolean {
  return TEMP_FILE_PATTERN.test(basename(name));
}

export interface TempFileFacts {
  /** The writing sink's instance; undefined for the older host/pid names. */
  owner: string | undefined;
  /** This sink's instance. */
  self: string;
  /** Time since the temp file was last written or touched. */
  tempAgeMs: number;
  tempTtlMs: number;
  /** For the older names, whose writers do not touch their files: removed after this long untouched. */
  legacyStaleMs: number;
}

/**
 * What to do with a temp file found in OUTPUT_DIR: `remove` it (its writer is
 * gone), `keep` it, or look again `later` (touched recently: a live writer,
 * or one that crashed moments ago). Decided by age alone, never by pid or
 * hostname, which collide between containers and change with a pod.
 */
export function staleTempVerdict(f: TempFileFacts): "remove" | "keep" | "later" {
  if (f.owner === f.self) return "keep";
  if (f.owner === undefined) return f.tempAgeMs > f.legacyStaleMs ? "remove" : "keep";
  return f.tempAgeMs > f.tempTtlMs ? "remove" : "later";
}

export interface TempFilesOptions {
  /** OUTPUT_DIR: where stale temp files are looked for. */
  root: string;
  log: Logger;
  /** Temp files in the older host/pid naming, untouched for this long, are removed by the sweep (default 1 h). */
  staleTempMs?: number | undefined;
  /** A temp file untouched for this long belongs to a writer that is gone (default 30 s). */
  tempTtlMs?: number | undefined;
  /** How often a live writer touches its temp files (default 5 s; well under tempTtlMs). */
  tempTouchMs?: number | undefined;
}

/** This sink's temp files: naming, keeping them visibly alive, and removing those of writers that are gone. */
export interface TempFiles {
  /** A new temp path in `dir` for file version `id`, touched until released. */
  claim(dir: string, id: string): string;
  /** The temp file was renamed into place or removed: stop touching it. */
  release(temp: string): void;
  /** Removes stale temp files under the root now, and looks again later at those touched recently. */
  sweep(): Promise<void>;
  close(): void;
}

export function createTempFiles(options: TempFilesOptions): TempFiles {
  const { root, log } = options;
  const staleTempMs = options.staleTempMs ?? DEFAULT_STALE_TEMP_MS;
  const tempTtlMs = options.tempTtlMs ?? DEFAULT_TEMP_TTL_MS;
  const instance = randomBytes(8).toString("hex");
  let seq = 0;
  /** Our temp files from creation until renamed or removed: touched every tempTouchMs. */
  const live = new Set<string>();
  const touchTimer = setInterval(() => {
    const now = new Date();
    for (const temp of live) void utimes(temp, now, now).catch(() => undefined);
  }, options.tempTouchMs ?? DEFAULT_TEMP_TOUCH_MS).unref();
  let recheckTimer: NodeJS.Timeout | undefined;

  /** Temp files anywhere under the root (bounded walk, symlinks not followed). */
  async function list(): Promise<string[]> {
    const found: string[] = [];
    let visited = 0;
    const walk = async (dir: string, depth: number): Promise<void> => {
      if (depth > SWEEP_MAX_DEPTH || visited > SWEEP_MAX_ENTRIES) return;
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (err) {
        log.warn({ dir, err: (err as Error).message }, "cannot list directory while looking for stale temp files");
        return;
      }
      for (const entry of entries) {
        if (++visited > SWEEP_MAX_ENTRIES) {
          log.warn({ outputDir: root, limit: SWEEP_MAX_ENTRIES }, "stale temp sweep stopped at its entry limit");
          return;
        }
        const full = join(dir, entry.name);
        if (entry.isDirectory()) await walk(full, depth + 1);
        else if (entry.isFile() && TEMP_FILE_PATTERN.test(entry.name)) found.push(full);
      }
    };
    await walk(root, 0);
    return found;
  }

  /** Removes those of `temps` whose writer is gone; returns those to look at again later. */
  async function removeStale(temps: readonly string[]): Promise<{ removed: number; later: string[] }> {
    let removed = 0;
    const later: string[] = [];
    for (const file of temps) {
      try {
        const st = await stat(file);
        const verdict = staleTempVerdict({
          owner: TEMP_FILE_PATTERN.exec(basename(file))?.[2],
          self: instance,
          tempAgeMs: Date.now() - st.mtimeMs,
          tempTtlMs,
          legacyStaleMs: staleTempMs,
        });
        if (verdict === "later") later.push(file);
        if (verdict !== "remove") continue;
        await unlink(file);
        removed++;
        log.debug({ file }, "removed stale temp file");
      } catch (err) {
        if (errnoCode(err) !== "ENOENT")
          log.warn({ file, err: (err as Error).message }, "cannot remove stale temp file");
      }
    }
    return { removed, later };
  }

  return {
    claim(dir, id) {
      const temp = join(dir, tempFileName(id, instance, ++seq));
      live.add(temp);
      return temp;
    },
    release(temp) {
      live.delete(temp);
    },
    async sweep() {
      const { removed, later } = await removeStale(await list());
      if (removed > 0) log.info({ outputDir: root, removed }, "removed stale temp files");
      // Touched recently: live peers' files, or those of a writer that crashed moments ago
      // (typically our own predecessor). Looked at again until the dead writers' are stale.
      const recheck = (pending: string[], delayMs: number) => {
        if (pending.length === 0) return;
        recheckTimer = setTimeout(() => {
          recheckTimer = undefined;
          void removeStale(pending).then(({ removed: n, later: still }) => {
            if (n > 0) log.info({ outputDir: root, removed: n }, "removed stale temp files");
            recheck(still, options.tempTouchMs ?? DEFAULT_TEMP_TOUCH_MS);
          });
        }, delayMs).unref();
      };
      recheck(later, tempTtlMs + 1000);
    },
    close() {
      clearInterval(touchTimer);
      clearTimeout(recheckTimer);
    },
  };
}

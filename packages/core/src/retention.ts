import { lstat, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { describeError } from "./errors.js";
import { errnoCode } from "./fsUtil.js";
import type { Logger } from "./logger.js";

/**
 * Retention of dated folders (ARCHIVE_DIR/YYYY-MM-DD, ERROR_DIR/YYYY-MM-DD):
 * without it they grow for as long as the service runs. Only directories
 * named exactly YYYY-MM-DD (a real UTC date) directly under a root are ever
 * removed; anything else an operator keeps there is left alone.
 */

const DAY_MS = 86_400_000;
const DAY_FOLDER = /^(\d{4})-(\d{2})-(\d{2})$/;
/** How often the pruner runs after its first run at start. */
export const RETENTION_INTERVAL_MS = 3_600_000;

/** The YYYY-MM-DD folder name (UTC) of the day `date` falls in. */
export function utcDay(date: Date = new Date()): string {
  return date.toISOString().slice(0, 10);
}

/** Start (UTC midnight, ms) of the day a YYYY-MM-DD name stands for; undefined for any other name. */
export function dayFolderStart(name: string): number | undefined {
  const m = DAY_FOLDER.exec(name);
  if (!m) return undefined;
  const t = Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]));
  // Date.UTC rolls 2024-02-31 over to March: only a name that round-trips is a date.
  return utcDay(new Date(t)) === name ? t : undefined;
}

/**
 * The day-folder names among `names` that are past retention: days before
 * today (UTC) minus `retentionDays`. Today and the `retentionDays` days
 * before it are kept (1 keeps today and yesterday); future dates and names
 * that are not dates are never returned.
 */
export function expiredDayFolders(names: Iterable<string>, retentionDays: number, now: Date): string[] {
  const today = Math.floor(now.getTime() / DAY_MS) * DAY_MS;
  const cutoff = today - retentionDays * DAY_MS;
  const out: string[] = [];
  for (const name of names) {
    const start = dayFolderStart(name);
    if (start !== undefined && start < cutoff) out.push(name);
  }
  return out.sort();
}

export interface RetentionRoot {
  /** A directory holding YYYY-MM-DD folders (e.g. ARCHIVE_DIR). */
  dir: string;
  /** Days kept before today; see expiredDayFolders. */
  days: number;
  /** Name for logs, e.g. ARCHIVE_DIR. */
  label: string;
}

/** The roots that have both a directory and a retention configured. */
export function retentionRoots(
  candidates: readonly { label: string; dir: string | undefined; days: number | undefined }[],
): RetentionRoot[] {
  const roots: RetentionRoot[] = [];
  for (const { label, dir, days } of candidates)
    if (dir !== undefined && days !== undefined) roots.push({ label, dir, days });
  return roots;
}

export interface RetentionPrunerOptions {
  roots: readonly RetentionRoot[];
  log: Logger;
  /** Default RETENTION_INTERVAL_MS. */
  intervalMs?: number;
  now?: () => Date;
}

export interface RetentionPruner extends AsyncDisposable {
  /** One pass now (also what the timer runs); resolves to the removed folders' paths. */
  prune(): Promise<string[]>;
  /** Stops the timer and waits for a pass in progress. */
  close(): Promise<void>;
}

/** Removes `root`'s expired day folders: real directories only, never what a symlink points to. */
async function pruneRoot(root: RetentionRoot, now: Date, log: Logger): Promise<string[]> {
  let entries;
  try {
    entries = await readdir(root.dir, { withFileTypes: true });
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return [];
    throw err;
  }
  const candidates = entries.filter((e) => e.isDirectory()).map((e) => e.name);
  const removed: string[] = [];
  for (const name of expiredDayFolders(candidates, root.days, now)) {
    const path = join(root.dir, name);
    try {
      // Checked again right before removal: a symlink is never followed out of the root.
      if (!(await lstat(path)).isDirectory()) continue;
      await rm(path, { recursive: true, force: true });
      removed.push(path);
      log.info(
        { dir: root.label, folder: name, path, retentionDays: root.days },
        "removed a day folder past retention",
      );
    } catch (err) {
      log.warn({ err: describeError(err), dir: root.label, path }, "could not remove a day folder past retention");
    }
  }
  return removed;
}

/**
 * Prunes each root's day folders past retention at start and then every
 * intervalMs (the timer does not keep the process alive). Failures are
 * logged and retried on the next pass.
 */
export function startRetentionPruner(options: RetentionPrunerOptions): RetentionPruner {
  const { roots, log } = options;
  const now = options.now ?? (() => new Date());
  let running: Promise<string[]> | undefined;
  let closed = false;

  const pass = async (): Promise<string[]> => {
    const removed: string[] = [];
    for (const root of roots) {
      try {
        removed.push(...(await pruneRoot(root, now(), log)));
      } catch (err) {
        log.warn({ err: describeError(err), dir: root.label }, "could not list a directory for retention");
      }
    }
    return removed;
  };
  const prune = (): Promise<string[]> => {
    if (closed) return Promise.resolve([]);
    // One pass at a time: a slow removal is not raced by the next tick.
    running ??= pass().finally(() => {
      running = undefined;
    });
    return running;
  };

  const timer =
    roots.length > 0 ? setInterval(() => void prune(), options.intervalMs ?? RETENTION_INTERVAL_MS) : undefined;
  timer?.unref();
  if (roots.length > 0) void prune();

  const close = async () => {
    closed = true;
    clearInterval(timer);
    await running;
  };
  return { prune, close, [Symbol.asyncDispose]: close };
}

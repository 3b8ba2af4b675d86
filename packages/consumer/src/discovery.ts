import { lstatSync } from "node:fs";
import type { ConsumerMetrics, Logger } from "@filerelay/core/internal";
import type { ConsumerConfig } from "./config.js";
import type { DirectoryScanner } from "./directoryScanner.js";
import { DirectoryWatcher } from "./directoryWatcher.js";
import type { FileSchedule } from "./fileSchedule.js";
import type { TrackedFile } from "./trackedFile.js";

/** Early scans (after file-system events) never take more than about a third of the time. */
const EARLY_SCAN_MIN_DELAY_MS = 20;
/**
 * A full poll costs CPU in proportion to the files resident in INPUT_DIR: the
 * next one starts no sooner than this many times the last one's CPU time, so
 * polling takes at most 1/POLL_CPU_FACTOR (1 %) of a CPU, leaving room under
 * 2 % for the rest of an idle consumer (its timers, NATS pings, garbage
 * collection after a poll). 100,000 resident files: a poll costs ~0.3-0.6 s of
 * CPU, so polls come every 30-60 s.
 */
const POLL_CPU_FACTOR = 100;
/** A scan timer firing this close to the poll's time runs the poll. */
const POLL_TIMER_SLACK_MS = 20;
/** ...but the poll, the source of truth for changes without events, still runs at least this often. */
const MAX_POLL_INTERVAL_MS = 10 * 60_000;
/** Events handled per batch of stat() calls. */
const EVENT_BATCH = 256;

export interface DiscoveryOptions {
  config: ConsumerConfig;
  scanner: DirectoryScanner;
  schedule: FileSchedule;
  log: Logger;
  metrics?: ConsumerMetrics | undefined;
  /** A path no longer listed (gone, or no longer matching). */
  drop: (rec: TrackedFile) => void;
  /** After each full poll (files left in place refresh their records then). */
  afterPoll: () => void;
}

/**
 * Finds files in INPUT_DIR: full polls (the source of truth, spaced by their
 * own CPU cost), light scans after file-system events (only new paths are
 * stat'ed), and events for known paths handled without a scan. What it finds
 * goes to the schedule.
 */
export class Discovery {
  readonly #config: ConsumerConfig;
  readonly #scanner: DirectoryScanner;
  readonly #schedule: FileSchedule;
  readonly #watcher: DirectoryWatcher;
  readonly #log: Logger;
  readonly #metrics: ConsumerMetrics | undefined;
  readonly #drop: (rec: TrackedFile) => void;
  readonly #afterPoll: () => void;
  readonly #loggedSkips = new Set<string>();
  #scanTimer: NodeJS.Timeout | undefined;
  #scanAt = Number.POSITIVE_INFINITY;
  #scanning: Promise<void> | undefined;
  #rescanRequested = false;
  #lastScanStart = 0;
  #lastFullScan = 0;
  #lastScanMs = 0;
  /** Interval between full polls: max(POLL_INTERVAL_MS, POLL_CPU_FACTOR × CPU of the last poll). */
  #pollIntervalMs: number;
  #scans = 0;
  #pendingPaths = new Set<string>();
  #eventsScheduled = false;
  #stopping = false;

  constructor(options: DiscoveryOptions) {
    this.#config = options.config;
    this.#scanner = options.scanner;
    this.#schedule = options.schedule;
    this.#log = options.log;
    this.#metrics = options.metrics;
    this.#drop = options.drop;
    this.#afterPoll = options.afterPoll;
    this.#pollIntervalMs = options.config.POLL_INTERVAL_MS;
    this.#watcher = new DirectoryWatcher({
      root: this.#scanner.root,
      onPath: (rel) => this.#onPath(rel),
      isIgnored: (rel) => this.#scanner.isIgnoredPath(rel),
      log: options.log,
    });
  }

  /** Starts watching and runs the first poll; resolves once it has been processed. */
  start(): Promise<void> {
    void this.#watcher.watchTree("");
    return this.#runScan();
  }

  get scans(): number {
    return this.#scans;
  }

  get watchedDirectories(): number {
    return this.#watcher.size;
  }

  /** Stops scanning and watching; waits for a scan in progress. */
  async close(): Promise<void> {
    this.#stopping = true;
    clearTimeout(this.#scanTimer);
    await this.#watcher.close();
    await this.#scanning;
  }

  #scheduleScan(delayMs: number): void {
    if (this.#stopping) return;
    const at = Date.now() + delayMs;
    if (this.#scanning) {
      if (delayMs < this.#pollIntervalMs) this.#rescanRequested = true;
      return;
    }
    if (this.#scanTimer && at >= this.#scanAt) return;
    clearTimeout(this.#scanTimer);
    this.#scanAt = at;
    this.#scanTimer = setTimeout(() => {
      this.#scanTimer = undefined;
      this.#scanAt = Number.POSITIVE_INFINITY;
      // Light unless the periodic full scan is due. A timer may fire a
      // millisecond before Date.now() reaches its time (libuv's loop clock is
      // not the wall clock): without the slack the poll's own timer ran a
      // light scan (listing every resident file), then the poll right after it.
      void this.#runScan(Date.now() + POLL_TIMER_SLACK_MS < this.#lastFullScan + this.#pollIntervalMs);
    }, delayMs);
  }

  /** An early scan, soon but spaced so that scanning a big directory cannot hog the CPU. */
  #requestEarlyScan(): void {
    const sinceLast = Date.now() - this.#lastScanStart;
    const spacing = Math.max(EARLY_SCAN_MIN_DELAY_MS, 3 * this.#lastScanMs);
    this.#scheduleScan(Math.max(EARLY_SCAN_MIN_DELAY_MS, spacing - sinceLast));
  }

  /** A full scan (poll), or a light one (after events: only new paths are stat'ed). */
  #runScan(light = false): Promise<void> {
    if (this.#scanning) return this.#scanning;
    const run = async () => {
      const started = Date.now();
      const cpu0 = process.cpuUsage();
      this.#lastScanStart = started;
      try {
        // A poll stats known files too, but only changed ones come back as ScannedFiles.
        const result = await this.#scanner.scan(
          light
            ? { isKnown: (rel) => this.#schedule.files.has(rel) }
            : { known: (rel) => this.#schedule.files.get(rel) },
        );
        if (this.#stopping) return;
        this.#scans++;
        const scanId = this.#scans;
        const now = Date.now();
        this.#schedule.markers = result.markers;
        for (const f of result.files) this.#schedule.observe(f, now, scanId);
        for (const rel of result.known) {
          const rec = this.#schedule.files.get(rel);
          if (rec) rec.seenInScan = scanId;
        }
        // Polls: resident files found unchanged come back as our own records.
        for (const rec of result.unchanged) rec.seenInScan = scanId;
        for (const dir of result.dirs) this.#watcher.watchDir(dir);
        for (const rec of this.#schedule.files.values()) {
          // Gone (deleted, moved away) or no longer matching: forget it.
          if (rec.seenInScan !== scanId && rec.state !== "active") this.#drop(rec);
        }
        if (this.#config.READY_MARKER_SUFFIX) {
          for (const rel of this.#schedule.markers) {
            const rec = this.#schedule.files.get(rel);
            if (rec?.state === "waiting") this.#schedule.makeReady(rec);
          }
        }
        if (this.#loggedSkips.size > 100_000) this.#loggedSkips.clear();
        for (const s of result.skipped) {
          if (this.#loggedSkips.has(s.rel)) continue;
          this.#loggedSkips.add(s.rel);
          if (s.warn) this.#log.warn({ path: s.rel, reason: s.reason }, "file skipped");
          else this.#log.debug({ path: s.rel, reason: s.reason }, "file skipped");
        }
        this.#metrics?.pendingFiles.set(this.#schedule.pendingCount());
        const cpu = process.cpuUsage(cpu0);
        const cpuMs = Math.round((cpu.user + cpu.system) / 1000);
        if (!light) {
          this.#afterPoll();
          // Honest polling: a poll that cost C ms of CPU is followed by at least
          // POLL_CPU_FACTOR × C ms of rest. (While files are being relayed the
          // process CPU includes that work too, which only spaces polls further;
          // fs events still trigger immediate light scans.)
          this.#pollIntervalMs = Math.max(
            this.#config.POLL_INTERVAL_MS,
            Math.min(MAX_POLL_INTERVAL_MS, POLL_CPU_FACTOR * cpuMs),
          );
        }
        this.#log.debug(
          {
            light,
            files: result.files.length + result.known.length + result.unchanged.length,
            durationMs: Date.now() - started,
            // Process CPU during the scan (includes files being published meanwhile).
            cpuMs,
            ...(light ? {} : { nextPollInMs: this.#pollIntervalMs }),
          },
          "scan done",
        );
      } catch (err) {
        this.#log.warn({ err, dir: this.#scanner.root }, "scanning INPUT_DIR failed; retrying at the next poll");
      } finally {
        this.#lastScanMs = Date.now() - started;
        this.#scanning = undefined;
        if (!this.#stopping) {
          if (this.#rescanRequested) {
            this.#rescanRequested = false;
            this.#requestEarlyScan();
          }
          if (!light) this.#lastFullScan = started;
          this.#scheduleScan(Math.max(0, this.#lastFullScan + this.#pollIntervalMs - Date.now()));
          this.#schedule.wake();
        }
      }
    };
    this.#scanning = run();
    return this.#scanning;
  }

  #onPath(rel: string): void {
    if (this.#stopping || this.#scanner.isIgnoredPath(rel)) return;
    this.#pendingPaths.add(rel);
    if (this.#eventsScheduled) return;
    this.#eventsScheduled = true;
    setImmediate(() => void this.#handleEvents());
  }

  /** File-system events: re-stat files we know; anything new triggers an early scan. */
  async #handleEvents(): Promise<void> {
    this.#eventsScheduled = false;
    const paths = [...this.#pendingPaths];
    this.#pendingPaths.clear();
    let unknown = false;
    for (let i = 0; i < paths.length && !this.#stopping; i += EVENT_BATCH) {
      const results = await Promise.all(paths.slice(i, i + EVENT_BATCH).map((rel) => this.#handleEvent(rel)));
      if (results.includes(true)) unknown = true;
    }
    if (unknown) this.#requestEarlyScan();
    this.#schedule.wake();
  }

  /** Returns true when the path is unknown and calls for a scan. */
  async #handleEvent(rel: string): Promise<boolean> {
    const markerOf = this.#scanner.markerTarget(rel);
    if (markerOf !== undefined) {
      // Synchronous metadata calls here and below: an lstat takes microseconds,
      // a thread-pool hop per event costs more CPU than the call.
      const exists = lstatSync(this.#scanner.absolute(rel), { throwIfNoEntry: false }) !== undefined;
      if (!exists) {
        this.#schedule.markers.delete(markerOf);
        return false;
      }
      this.#schedule.markers.add(markerOf);
      const rec = this.#schedule.files.get(markerOf);
      if (rec?.state === "waiting") this.#schedule.makeReady(rec);
      return rec === undefined;
    }
    const rec = this.#schedule.files.get(rel);
    if (rec?.state === "active") return false;
    let st;
    try {
      st = lstatSync(this.#scanner.absolute(rel), { throwIfNoEntry: false });
    } catch {
      st = undefined;
    }
    if (!st) {
      // Gone: forget it (unless a worker picked it up meanwhile).
      if (rec && this.#schedule.files.get(rel) === rec) this.#drop(rec);
      return false;
    }
    if (st.isDirectory()) {
      await this.#watcher.watchTree(rel);
      return true;
    }
    if (!rec) return true;
    if (st.isSymbolicLink()) {
      // Only what the scanner resolves is trusted for links.
      return true;
    }
    if (!st.isFile()) return true;
    this.#schedule.observe({ rel, size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, ctimeMs: st.ctimeMs }, Date.now());
    return false;
  }
}

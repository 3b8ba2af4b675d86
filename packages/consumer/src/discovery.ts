import { lstatSync } from "node:fs";
import type { ConsumerMetrics, Logger } from "@filerelay/core/internal";
import type { ConsumerConfig } from "./config.js";
import type { DirectoryScanner } from "./directoryScanner.js";
import { DirectoryWatcher } from "./directoryWatcher.js";
import type { DirectoryWalk, ScanResult } from "./directoryWalk.js";
import type { FileSchedule } from "./fileSchedule.js";
import type { SettledView } from "./settledFiles.js";
import type { TrackedFile } from "./trackedFile.js";

/** What a walk knows of a path: an in-progress record, or a settled one's compact view. */
type Known = TrackedFile | SettledView;

/**
 * A full poll costs CPU in proportion to the files resident in INPUT_DIR: the
 * next one starts no sooner than this many times the last one's CPU time, so
 * polling takes at most 1/POLL_CPU_FACTOR (1 %) of a CPU, leaving room under
 * 2 % for the rest of an idle consumer (its timers, NATS pings, garbage
 * collection after a poll). 100,000 resident files: a poll costs ~0.3-0.6 s of
 * CPU, so polls come every 30-60 s.
 */
const POLL_CPU_FACTOR = 100;
/** ...but the poll, the source of truth for changes without events, still runs at least this often. */
const MAX_POLL_INTERVAL_MS = 10 * 60_000;
/** Events handled per batch of stat() calls. */
const EVENT_BATCH = 256;
/** Events are handled this long after the first of a burst. */
const EVENT_SETTLE_MS = 20;
/** Directory entries read per step of a walk: the most a step adds to the working window. */
const STEP_ENTRIES = 256;

export interface DiscoveryOptions {
  config: ConsumerConfig;
  scanner: DirectoryScanner;
  schedule: FileSchedule;
  log: Logger;
  metrics?: ConsumerMetrics | undefined;
  /** A path no longer listed (gone, or no longer matching). */
  drop: (rec: TrackedFile) => void;
  /** A settled file's path found empty by an event (surely gone). */
  dropSettled: (view: SettledView) => void;
  /** After each full poll (files left in place refresh their records then). */
  afterPoll: () => void;
}

/**
 * Finds files in INPUT_DIR and hands them to the schedule, within its working
 * window:
 * - polls (the source of truth) walk the whole tree, spaced by their own CPU
 *   cost; a poll is a resumable walk (a stack of directories and one open
 *   directory stream) that pauses while the window is full and goes on as
 *   files leave it, so a backlog of millions is never listed or held at once;
 * - file-system events: a new file is taken in at once ("fresh": favoured by
 *   workers over a backlog, with extra room in the window); a new directory,
 *   or whatever an event cannot settle alone, is read by a light walk (known
 *   paths not stat'ed) ahead of the poll.
 */
export class Discovery {
  readonly #config: ConsumerConfig;
  readonly #scanner: DirectoryScanner;
  readonly #schedule: FileSchedule;
  readonly #watcher: DirectoryWatcher;
  readonly #log: Logger;
  readonly #metrics: ConsumerMetrics | undefined;
  readonly #drop: (rec: TrackedFile) => void;
  readonly #dropSettled: (view: SettledView) => void;
  readonly #afterPoll: () => void;
  readonly #loggedSkips = new Set<string>();

  /** The poll in progress. */
  #poll:
    { walk: DirectoryWalk<Known>; started: number; cpuUs: number; files: number; markers: Set<string> } | undefined;
  /** Id of the poll in progress, or of the last one: records seen by it carry it in seenInScan. */
  #pollId = 0;
  #pollTimer: NodeJS.Timeout | undefined;
  /** Directories announced by events, read by a light walk ahead of the poll. */
  #hinted: DirectoryWalk<Known> | undefined;
  readonly #hintedDirs = new Set<string>();
  #driving: Promise<void> | undefined;
  #paused = false;
  /** Interval between full polls: max(POLL_INTERVAL_MS, POLL_CPU_FACTOR × CPU of the last poll). */
  #pollIntervalMs: number;
  #scans = 0;
  #pendingPaths = new Set<string>();
  #eventsScheduled = false;
  #stopping = false;
  #stopped!: () => void;
  readonly #stoppedPromise = new Promise<void>((resolve) => (this.#stopped = resolve));
  #firstScanDone!: () => void;
  readonly #firstScan = new Promise<void>((resolve) => (this.#firstScanDone = resolve));

  constructor(options: DiscoveryOptions) {
    this.#config = options.config;
    this.#scanner = options.scanner;
    this.#schedule = options.schedule;
    this.#log = options.log;
    this.#metrics = options.metrics;
    this.#drop = options.drop;
    this.#dropSettled = options.dropSettled;
    this.#afterPoll = options.afterPoll;
    this.#pollIntervalMs = options.config.POLL_INTERVAL_MS;
    this.#watcher = new DirectoryWatcher({
      root: this.#scanner.root,
      onPath: (rel) => this.#onPath(rel),
      isIgnored: (rel) => this.#scanner.isIgnoredPath(rel),
      log: options.log,
    });
  }

  /**
   * Starts watching and the first poll. Resolves once that poll is done, or
   * has paused because the working window is full (a huge INPUT_DIR is worked
   * on while it is still being read).
   */
  start(): Promise<void> {
    void this.#watcher.watchTree("");
    this.#startPoll();
    return this.#firstScan;
  }

  /** Full polls completed. */
  get scans(): number {
    return this.#scans;
  }

  get watchedDirectories(): number {
    return this.#watcher.size;
  }

  /** Discovery waits for room in the working window. */
  get paused(): boolean {
    return this.#paused;
  }

  /** Stops scanning and watching; waits for a walk step in progress. */
  async close(): Promise<void> {
    this.#stopping = true;
    this.#stopped();
    clearTimeout(this.#pollTimer);
    await this.#watcher.close();
    await this.#driving;
    await this.#poll?.walk.close();
    await this.#hinted?.close();
    this.#firstScanDone();
  }

  #startPoll(): void {
    if (this.#stopping || this.#poll) return;
    this.#pollId++;
    this.#poll = {
      // A poll stats known files too, but only changed ones come back as ScannedFiles.
      walk: this.#scanner.walk<Known>({ known: (rel) => this.#known(rel) }),
      started: Date.now(),
      cpuUs: 0,
      files: 0,
      markers: new Set(),
    };
    this.#drive();
  }

  #known(rel: string): Known | undefined {
    const rec = this.#schedule.files.get(rel);
    if (rec || this.#schedule.settled.size === 0) return rec;
    return this.#schedule.settled.get(rel);
  }

  /** Reads a directory ahead of the poll (`deep`: and everything below it). */
  #hint(dir: string, deep: boolean): void {
    if (this.#stopping) return;
    const key = `${deep ? "+" : "-"}${dir}`;
    if (this.#hintedDirs.has(key)) return;
    this.#hintedDirs.add(key);
    if (this.#hinted) this.#hinted.push(dir, deep);
    else {
      this.#hinted = this.#scanner.walk<Known>(
        { isKnown: (rel) => this.#schedule.files.has(rel) || this.#schedule.settled.has(rel) },
        [],
      );
      this.#hinted.push(dir, deep);
    }
    this.#drive();
  }

  /** Runs the walks (announced directories first, then the poll), step by step, while the window has room. */
  #drive(): void {
    if (this.#driving || this.#stopping) return;
    const run = async () => {
      for (;;) {
        if (this.#stopping) return;
        const hinted = this.#hinted && !this.#hinted.done ? this.#hinted : undefined;
        const walk = hinted ?? this.#poll?.walk;
        if (!walk) return;
        if (!this.#schedule.hasRoom("walk")) {
          this.#schedule.hold(false);
          this.#paused = true;
          this.#firstScanDone();
          this.#log.debug({ inProgress: this.#schedule.inProgress }, "working window full; discovery paused");
          await Promise.race([this.#schedule.whenRoom(), this.#stoppedPromise]);
          this.#paused = false;
          continue;
        }
        this.#schedule.hold(true);
        const cpu0 = process.cpuUsage();
        const batch = await walk.step(STEP_ENTRIES);
        if (this.#stopping) return;
        const isPoll = walk === this.#poll?.walk;
        this.#absorb(batch, isPoll);
        if (isPoll) {
          const cpu = process.cpuUsage(cpu0);
          this.#poll!.cpuUs += cpu.user + cpu.system;
          if (walk.done) this.#finishPoll();
        } else if (walk.done) {
          this.#hinted = undefined;
          this.#hintedDirs.clear();
        }
      }
    };
    this.#driving = run()
      .catch((err: unknown) => {
        this.#log.warn({ err, dir: this.#scanner.root }, "scanning INPUT_DIR failed; retrying at the next poll");
        void this.#poll?.walk.close();
        void this.#hinted?.close();
        this.#poll = undefined;
        this.#hinted = undefined;
        this.#hintedDirs.clear();
        this.#schedulePoll();
      })
      .finally(() => {
        this.#driving = undefined;
        this.#schedule.hold(false);
        // A hint that came while the loop was ending.
        if (!this.#stopping && this.#hinted && !this.#hinted.done) this.#drive();
      });
  }

  /** What one step of a walk found. */
  #absorb(batch: ScanResult<Known>, isPoll: boolean): void {
    const now = Date.now();
    const scanId = this.#pollId;
    for (const f of batch.files) this.#schedule.observe(f, now, scanId);
    for (const rel of batch.known) {
      const rec = this.#known(rel);
      if (rec) this.#markSeen(rec, scanId);
    }
    // Polls: resident files found unchanged come back as our own records.
    for (const rec of batch.unchanged) this.#markSeen(rec, scanId);
    for (const dir of batch.dirs) this.#watcher.watchDir(dir);
    for (const rel of batch.markers) {
      this.#schedule.markers.add(rel);
      if (isPoll) this.#poll!.markers.add(rel);
      const rec = this.#schedule.files.get(rel);
      if (rec?.state === "waiting") this.#schedule.makeReady(rec);
    }
    if (isPoll) this.#poll!.files += batch.files.length + batch.known.length + batch.unchanged.length;
    if (this.#loggedSkips.size > 100_000) this.#loggedSkips.clear();
    for (const s of batch.skipped) {
      if (this.#loggedSkips.has(s.rel)) continue;
      this.#loggedSkips.add(s.rel);
      if (s.warn) this.#log.warn({ path: s.rel, reason: s.reason }, "file skipped");
      else this.#log.debug({ path: s.rel, reason: s.reason }, "file skipped");
    }
    this.#metrics?.pendingFiles.set(this.#schedule.inProgress);
    this.#schedule.wake();
  }

  #markSeen(rec: Known, scanId: number): void {
    if ("key" in rec) this.#schedule.settled.markSeen(rec.key, scanId);
    else rec.seenInScan = scanId;
  }

  #finishPoll(): void {
    const poll = this.#poll!;
    this.#poll = undefined;
    const scanId = this.#pollId;
    this.#scans++;
    for (const rec of this.#schedule.files.values()) {
      // Gone (deleted, moved away) or no longer matching: forget it.
      if (rec.seenInScan !== scanId && rec.state !== "active") this.#drop(rec);
    }
    // Settled files not seen: forgotten. Their fingerprint records are not
    // purged here (a directory that could not be read hides files still there;
    // the records expire by themselves), only when an event shows the path empty.
    this.#schedule.settled.sweep(scanId, () => undefined);
    // Markers not seen by this poll: gone, unless one appeared after the walk passed its directory.
    for (const rel of this.#schedule.markers) {
      if (poll.markers.has(rel)) continue;
      const marker = this.#scanner.absolute(`${rel}${this.#config.READY_MARKER_SUFFIX ?? ""}`);
      if (lstatSync(marker, { throwIfNoEntry: false }) === undefined) this.#schedule.markers.delete(rel);
    }
    this.#afterPoll();
    const cpuMs = Math.round(poll.cpuUs / 1000);
    // Honest polling: a poll that cost C ms of CPU is followed by at least
    // POLL_CPU_FACTOR × C ms of rest. Only the walk's own steps are counted,
    // not the publishing that went on while it was paused.
    this.#pollIntervalMs = Math.max(
      this.#config.POLL_INTERVAL_MS,
      Math.min(MAX_POLL_INTERVAL_MS, POLL_CPU_FACTOR * cpuMs),
    );
    this.#log.debug(
      {
        light: false,
        files: poll.files,
        durationMs: Date.now() - poll.started,
        cpuMs,
        nextPollInMs: this.#pollIntervalMs,
      },
      "scan done",
    );
    this.#firstScanDone();
    this.#schedulePoll();
    this.#schedule.wake();
  }

  #schedulePoll(): void {
    if (this.#stopping) return;
    clearTimeout(this.#pollTimer);
    this.#pollTimer = setTimeout(() => {
      this.#pollTimer = undefined;
      this.#startPoll();
    }, this.#pollIntervalMs);
  }

  #onPath(rel: string): void {
    if (this.#stopping || this.#scanner.isIgnoredPath(rel)) return;
    this.#pendingPaths.add(rel);
    if (this.#eventsScheduled) return;
    this.#eventsScheduled = true;
    // A short pause coalesces a burst of events and lets a writer that creates and then
    // writes a file (open O_CREAT, write, close) finish before the file is looked at.
    setTimeout(() => void this.#handleEvents(), EVENT_SETTLE_MS);
  }

  /** File-system events: re-stat the paths; new files are taken in, the rest hinted to a walk. */
  async #handleEvents(): Promise<void> {
    this.#eventsScheduled = false;
    const paths = [...this.#pendingPaths];
    this.#pendingPaths.clear();
    for (let i = 0; i < paths.length && !this.#stopping; i += EVENT_BATCH) {
      await Promise.all(paths.slice(i, i + EVENT_BATCH).map((rel) => this.#handleEvent(rel)));
    }
    this.#metrics?.pendingFiles.set(this.#schedule.inProgress);
    this.#schedule.wake();
  }

  #hintParent(rel: string): void {
    const slash = rel.lastIndexOf("/");
    this.#hint(slash < 0 ? "" : rel.slice(0, slash), false);
  }

  async #handleEvent(rel: string): Promise<void> {
    const markerOf = this.#scanner.markerTarget(rel);
    if (markerOf !== undefined) {
      // Synchronous metadata calls here and below: an lstat takes microseconds,
      // a thread-pool hop per event costs more CPU than the call.
      const exists = lstatSync(this.#scanner.absolute(rel), { throwIfNoEntry: false }) !== undefined;
      if (!exists) {
        this.#schedule.markers.delete(markerOf);
        return;
      }
      this.#schedule.markers.add(markerOf);
      const rec = this.#schedule.files.get(markerOf);
      if (rec?.state === "waiting") this.#schedule.makeReady(rec);
      if (rec === undefined) this.#hintParent(rel);
      return;
    }
    const rec = this.#schedule.files.get(rel);
    if (rec?.state === "active") return;
    let st;
    try {
      st = lstatSync(this.#scanner.absolute(rel), { throwIfNoEntry: false });
    } catch {
      st = undefined;
    }
    if (!st) {
      // Gone: forget it (unless a worker picked it up meanwhile).
      if (rec && this.#schedule.files.get(rel) === rec) this.#drop(rec);
      else if (!rec) {
        const view = this.#schedule.settled.delete(rel);
        if (view) this.#dropSettled(view);
      }
      return;
    }
    if (st.isDirectory()) {
      await this.#watcher.watchTree(rel);
      this.#hint(rel, true);
      return;
    }
    const identity = { rel, size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, ctimeMs: st.ctimeMs };
    if (rec || this.#schedule.settled.has(rel)) {
      // Only what the scanner resolves is trusted for links.
      // A change announced by an event is fresh too: it does not wait behind a backlog.
      if (st.isFile()) this.#schedule.observe(identity, Date.now(), undefined, true);
      else this.#hintParent(rel);
      return;
    }
    if (!st.isFile()) {
      // Links, FIFOs, sockets: classified (and skipped with a reason, or resolved) by the walk.
      this.#hintParent(rel);
      return;
    }
    if (!this.#scanner.isCandidate(rel)) return;
    // A new file: taken in now, ahead of any backlog, while the window's event share has room.
    if (this.#schedule.hasRoom("event")) this.#schedule.observe(identity, Date.now(), this.#pollId, true);
    else this.#hintParent(rel);
  }
}

import type { Logger } from "@filerelay/core";
import { DEFAULT_WINDOW, mayAdmit, mayResume, pickReadyQueue, type WindowLimits } from "./admission.js";
import type { ScannedFile } from "./directoryScanner.js";
import { sameIdentity } from "./fileVersion.js";
import { MinHeap } from "./minHeap.js";
import { SettledFiles } from "./settledFiles.js";
import type { TrackedFile } from "./trackedFile.js";

export interface FileScheduleOptions {
  /** How long a version must stay unchanged before it is ready (STABILITY_MS). */
  stabilityMs: number;
  /** READY_MARKER_SUFFIX is set: a file is ready once its marker exists, not after a quiet period. */
  readyMarkers: boolean;
  log: Logger;
  /** Files became ready (or a retry came due): start workers. */
  onDue: () => void;
  /** The working window (default DEFAULT_WINDOW). */
  limits?: WindowLimits | undefined;
}

type ReadyItem = { rel: string; gen: number; mtimeMs: number };

const isSettled = (state: TrackedFile["state"]) => state === "done" || state === "failed";

/**
 * The files the source knows and when each is due: a stability deadline per
 * new version (FIFO: the clock only moves forward, so it is sorted), a retry
 * heap for backoffs, and ready heaps (oldest mtime first) that workers take
 * from. One record per path, never a handle or buffer.
 *
 * The working window: files in progress (all but the settled: done, failed)
 * are bounded (mayAdmit); discovery pauses while it is full (whenRoom). Files
 * announced by file-system events are "fresh": they have their own ready heap,
 * which workers favour (pickReadyQueue), so they are not stuck behind a backlog.
 */
export class FileSchedule {
  /** Files in progress, and settled ones that cannot be kept compactly (symlinks). */
  readonly files = new Map<string, TrackedFile>();
  /** Settled files (done, failed), in compact records: what a huge INPUT_DIR left in place costs. */
  readonly settled = new SettledFiles();
  /** Files whose ready marker exists (relative paths of the files, not the markers). */
  markers = new Set<string>();
  readonly #o: FileScheduleOptions;
  #stability: { at: number; rel: string; gen: number }[] = [];
  #stabilityHead = 0;
  readonly #ready = new MinHeap<ReadyItem>(byMtime);
  readonly #freshReady = new MinHeap<ReadyItem>(byMtime);
  #freshInARow = 0;
  /** Records in the map that are done or failed (outside the working window). */
  #settled = 0;
  readonly #limits: WindowLimits;
  #roomWaiter: (() => void) | undefined;
  /** While a walk reads on, files it found that came due wait here, so the ready heap orders them all by mtime. */
  #holding = false;
  #held: { rec: TrackedFile; gen: number }[] = [];
  /** When the last file a walk found becomes due: held files wait for it too. */
  #holdUntil = 0;
  #lastHeldAt = 0;
  readonly #retries = new MinHeap<{ at: number; rel: string; gen: number }>((a, b) => a.at < b.at);
  #wakeTimer: NodeJS.Timeout | undefined;
  #wakeAt = Number.POSITIVE_INFINITY;
  #closed = false;

  constructor(options: FileScheduleOptions) {
    this.#o = options;
    this.#limits = options.limits ?? DEFAULT_WINDOW;
  }

  get readyCount(): number {
    return this.#ready.size + this.#freshReady.size;
  }

  /** Files in progress: the working window's fill. */
  get inProgress(): number {
    return this.files.size - this.#settled;
  }

  /** May a file found by a walk (or announced by an event) be tracked now? */
  hasRoom(from: "walk" | "event"): boolean {
    return mayAdmit(this.inProgress, from, this.#limits);
  }

  /** Resolves once the window has drained enough for a paused walk to go on (or the schedule stops). */
  whenRoom(): Promise<void> {
    if (this.#closed || mayResume(this.inProgress, this.#limits)) return Promise.resolve();
    return new Promise((resolve) => {
      const previous = this.#roomWaiter;
      this.#roomWaiter = () => {
        previous?.();
        resolve();
      };
    });
  }

  #checkRoom(): void {
    if (this.#roomWaiter && (this.#closed || mayResume(this.inProgress, this.#limits))) {
      const w = this.#roomWaiter;
      this.#roomWaiter = undefined;
      w();
    }
  }

  /**
   * Marks a file done (published, left in place) or failed (left in place): it
   * leaves the working window, and its record becomes a compact one (a link
   * keeps its full record: its target is resolved anew on every poll).
   */
  settle(rec: TrackedFile, state: "done" | "failed"): void {
    if (rec.target === undefined && rec.refused === undefined && this.files.get(rec.rel) === rec) {
      if (isSettled(rec.state)) this.#settled--;
      this.files.delete(rec.rel);
      rec.state = state;
      this.settled.set(rec.rel, {
        size: rec.size,
        mtimeMs: rec.mtimeMs,
        ino: rec.ino,
        ctimeMs: rec.ctimeMs,
        state,
        fingerprint: rec.fingerprint,
        recordedAt: rec.recordedAt,
        seenInScan: rec.seenInScan,
      });
    } else {
      if (!isSettled(rec.state)) this.#settled++;
      rec.state = state;
    }
    this.#checkRoom();
  }

  /** A settled file is worked on again (a new version). */
  #unsettle(rec: TrackedFile): void {
    if (isSettled(rec.state)) this.#settled--;
  }

  /** A new observation of a file's identity, from a scan or an event. */
  observe(f: ScannedFile, now: number, scanId?: number, fresh = false): void {
    let rec = this.files.get(f.rel);
    let changedSettled = false;
    if (!rec && this.settled.size > 0) {
      const was = this.settled.get(f.rel);
      if (was) {
        if (f.target === undefined && f.refused === undefined && sameIdentity(was, f)) {
          if (scanId !== undefined) this.settled.markSeen(was.key, scanId);
          return;
        }
        // A new version of a settled file.
        this.settled.delete(f.rel);
        changedSettled = true;
      }
    }
    if (!rec) {
      rec = {
        rel: f.rel,
        size: f.size,
        mtimeMs: f.mtimeMs,
        ino: f.ino,
        ctimeMs: f.ctimeMs,
        target: f.target,
        refused: f.refused,
        state: "waiting",
        gen: 0,
        observedAt: now,
        detectedAt: new Date(now),
        attempts: 0,
        seenInScan: scanId ?? 0,
        ...(fresh ? { fresh } : {}),
        ...(changedSettled ? { sawWrites: true } : {}),
      };
      this.files.set(f.rel, rec);
      this.#o.log.debug({ path: f.rel, size: f.size }, "file detected; waiting until it is complete");
      this.startWaiting(rec, now);
      return;
    }
    if (scanId !== undefined) rec.seenInScan = scanId;
    // A worker verifies the file itself; it must not be disturbed.
    if (rec.state === "active") return;
    if (sameIdentity(rec, f) && rec.refused === f.refused) return;
    if (fresh) rec.fresh = true;
    rec.size = f.size;
    rec.mtimeMs = f.mtimeMs;
    rec.ino = f.ino;
    rec.ctimeMs = f.ctimeMs;
    rec.target = f.target;
    rec.refused = f.refused;
    rec.detectedAt = new Date(now);
    rec.heldOpen = undefined;
    rec.sawWrites = true;
    // A changed file is a new version: fresh attempts.
    rec.attempts = 0;
    rec.firstAttemptAt = undefined;
    this.startWaiting(rec, now);
  }

  startWaiting(rec: TrackedFile, now: number): void {
    this.#unsettle(rec);
    rec.gen++;
    rec.state = "waiting";
    rec.observedAt = now;
    if (this.#holding && !rec.fresh) this.#lastHeldAt = now;
    if (this.#o.readyMarkers) {
      // The marker, not a quiet period, says the file is complete.
      if (this.markers.has(rec.rel)) this.makeReady(rec);
      return;
    }
    const at = now + this.#o.stabilityMs;
    this.#stability.push({ at, rel: rec.rel, gen: rec.gen });
    this.#scheduleWake(at);
  }

  /** The oldest ready file (undefined when none): a worker takes it. */
  popReady(): TrackedFile | undefined {
    for (;;) {
      const queue = pickReadyQueue(this.#freshReady.size, this.#ready.size, this.#freshInARow);
      if (queue === undefined) return undefined;
      const item = (queue === "fresh" ? this.#freshReady : this.#ready).pop()!;
      const rec = this.files.get(item.rel);
      if (rec && rec.gen === item.gen && rec.state === "ready") {
        this.#freshInARow = queue === "fresh" ? this.#freshInARow + 1 : 0;
        return rec;
      }
    }
  }

  /** Forgets a path (unless another record has taken its place). */
  delete(rec: TrackedFile): void {
    if (this.files.get(rec.rel) !== rec) return;
    this.files.delete(rec.rel);
    if (isSettled(rec.state)) this.#settled--;
    this.#checkRoom();
  }

  #scheduleWake(at: number): void {
    if (this.#closed || at >= this.#wakeAt) return;
    clearTimeout(this.#wakeTimer);
    this.#wakeAt = at;
    this.#wakeTimer = setTimeout(
      () => {
        this.#wakeTimer = undefined;
        this.#wakeAt = Number.POSITIVE_INFINITY;
        this.wake();
      },
      Math.max(0, at - Date.now()),
    );
  }

  /** Moves due files to the ready queue, starts workers, and sets the next wake-up. */
  wake(): void {
    if (this.#closed) return;
    const now = Date.now();
    const holding = this.#holding || now < this.#holdUntil;
    while (this.#stabilityHead < this.#stability.length) {
      const item = this.#stability[this.#stabilityHead]!;
      if (item.at > now) break;
      this.#stabilityHead++;
      const rec = this.files.get(item.rel);
      if (rec && rec.gen === item.gen && rec.state === "waiting") {
        if (holding && !rec.fresh) this.#held.push({ rec, gen: rec.gen });
        else this.makeReady(rec);
      }
    }
    if (this.#stabilityHead > 1024 && this.#stabilityHead * 2 > this.#stability.length) {
      this.#stability = this.#stability.slice(this.#stabilityHead);
      this.#stabilityHead = 0;
    }
    for (let top = this.#retries.peek(); top && top.at <= now; top = this.#retries.peek()) {
      this.#retries.pop();
      const rec = this.files.get(top.rel);
      if (rec && rec.gen === top.gen && rec.state === "backoff") this.makeReady(rec);
    }
    if (!holding && this.#held.length > 0) this.#releaseHeld();
    this.#o.onDue();
    let next = Math.min(this.#stability[this.#stabilityHead]?.at ?? Infinity, this.#retries.peek()?.at ?? Infinity);
    if (this.#held.length > 0 && !this.#holding) next = Math.min(next, this.#holdUntil);
    if (next !== Infinity) this.#scheduleWake(next);
  }

  /**
   * Holds back walk-found files that come due while a walk is reading on
   * (hold(true)), and lets them all into the ready heap at once when it
   * pauses or ends (hold(false)): a burst found in steps is still published
   * oldest mtime first, not in the order the directory listing gave it.
   */
  hold(on: boolean): void {
    if (on === this.#holding) return;
    this.#holding = on;
    if (on) return;
    this.#holdUntil = this.#lastHeldAt + this.#o.stabilityMs;
    this.wake();
  }

  #releaseHeld(): void {
    const held = this.#held;
    this.#held = [];
    for (const { rec, gen } of held) {
      if (rec.gen === gen && rec.state === "waiting" && this.files.get(rec.rel) === rec) this.makeReady(rec);
    }
  }

  /** Queues a file for a worker (the caller starts workers: queuing many first lets the oldest go first). */
  makeReady(rec: TrackedFile): void {
    this.#unsettle(rec);
    rec.state = "ready";
    (rec.fresh ? this.#freshReady : this.#ready).push({ rel: rec.rel, gen: rec.gen, mtimeMs: rec.mtimeMs });
  }

  retryLater(rec: TrackedFile, delayMs: number): void {
    this.#unsettle(rec);
    rec.state = "backoff";
    const at = Date.now() + delayMs;
    this.#retries.push({ at, rel: rec.rel, gen: rec.gen });
    this.#scheduleWake(at);
  }

  stop(): void {
    this.#closed = true;
    this.#held = [];
    clearTimeout(this.#wakeTimer);
    this.#checkRoom();
  }
}

function byMtime(a: ReadyItem, b: ReadyItem): boolean {
  return a.mtimeMs === b.mtimeMs ? a.rel < b.rel : a.mtimeMs < b.mtimeMs;
}

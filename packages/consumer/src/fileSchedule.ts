import type { Logger } from "@filerelay/core";
import type { ScannedFile } from "./directoryScanner.js";
import { sameIdentity } from "./fileVersion.js";
import { MinHeap } from "./minHeap.js";
import type { TrackedFile } from "./trackedFile.js";

export interface FileScheduleOptions {
  /** How long a version must stay unchanged before it is ready (STABILITY_MS). */
  stabilityMs: number;
  /** READY_MARKER_SUFFIX is set: a file is ready once its marker exists, not after a quiet period. */
  readyMarkers: boolean;
  log: Logger;
  /** Files became ready (or a retry came due): start workers. */
  onDue: () => void;
}

/**
 * The files the source knows and when each is due: a stability deadline per
 * new version (FIFO: the clock only moves forward, so it is sorted), a retry
 * heap for backoffs, and a ready heap (oldest mtime first) that workers take
 * from. One record per path, never a handle or buffer.
 */
export class FileSchedule {
  readonly files = new Map<string, TrackedFile>();
  /** Files whose ready marker exists (relative paths of the files, not the markers). */
  markers = new Set<string>();
  readonly #o: FileScheduleOptions;
  #stability: { at: number; rel: string; gen: number }[] = [];
  #stabilityHead = 0;
  readonly #ready = new MinHeap<{ rel: string; gen: number; mtimeMs: number }>((a, b) =>
    a.mtimeMs === b.mtimeMs ? a.rel < b.rel : a.mtimeMs < b.mtimeMs,
  );
  readonly #retries = new MinHeap<{ at: number; rel: string; gen: number }>((a, b) => a.at < b.at);
  #wakeTimer: NodeJS.Timeout | undefined;
  #wakeAt = Number.POSITIVE_INFINITY;
  #closed = false;

  constructor(options: FileScheduleOptions) {
    this.#o = options;
  }

  get readyCount(): number {
    return this.#ready.size;
  }

  pendingCount(): number {
    let n = 0;
    for (const f of this.files.values()) if (f.state !== "done" && f.state !== "failed") n++;
    return n;
  }

  /** A new observation of a file's identity, from a scan or an event. */
  observe(f: ScannedFile, now: number, scanId?: number): void {
    let rec = this.files.get(f.rel);
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
    rec.gen++;
    rec.state = "waiting";
    rec.observedAt = now;
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
    while (this.#ready.size > 0) {
      const item = this.#ready.pop()!;
      const rec = this.files.get(item.rel);
      if (rec && rec.gen === item.gen && rec.state === "ready") return rec;
    }
    return undefined;
  }

  /** Forgets a path (unless another record has taken its place). */
  delete(rec: TrackedFile): void {
    if (this.files.get(rec.rel) === rec) this.files.delete(rec.rel);
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
    while (this.#stabilityHead < this.#stability.length) {
      const item = this.#stability[this.#stabilityHead]!;
      if (item.at > now) break;
      this.#stabilityHead++;
      const rec = this.files.get(item.rel);
      if (rec && rec.gen === item.gen && rec.state === "waiting") this.makeReady(rec);
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
    this.#o.onDue();
    const next = Math.min(this.#stability[this.#stabilityHead]?.at ?? Infinity, this.#retries.peek()?.at ?? Infinity);
    if (next !== Infinity) this.#scheduleWake(next);
  }

  /** Queues a file for a worker (the caller starts workers: queuing many first lets the oldest go first). */
  makeReady(rec: TrackedFile): void {
    rec.state = "ready";
    this.#ready.push({ rel: rec.rel, gen: rec.gen, mtimeMs: rec.mtimeMs });
  }

  retryLater(rec: TrackedFile, delayMs: number): void {
    rec.state = "backoff";
    const at = Date.now() + delayMs;
    this.#retries.push({ at, rel: rec.rel, gen: rec.gen });
    this.#scheduleWake(at);
  }

  stop(): void {
    this.#closed = true;
    clearTimeout(this.#wakeTimer);
  }
}

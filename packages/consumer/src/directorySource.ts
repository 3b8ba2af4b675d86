import { randomUUID } from "node:crypto";
import { constants } from "node:fs";
import { performance } from "node:perf_hooks";
import { pathToFileURL } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import {
  backoffDelay,
  createSemaphore,
  isStreamNotFound,
  describeError,
  FilerelayError,
  fileVersionId,
  isFilerelayError,
  jetstreamNames,
  natsReadiness,
  SourceError,
  withTimeout,
  type ConsumerMetrics,
  type Logger,
  type NatsConnection,
  type Semaphore,
  type StatusLedger,
} from "@filerelay/core/internal";
import { windowLimits, type WindowLimits } from "./admission.js";
import { ClaimStore } from "./claimStore.js";
import type { ConsumerConfig } from "./config.js";
import { DirectoryScanner, realPathOf } from "./directoryScanner.js";
import { Discovery } from "./discovery.js";
import { dispositionStrategy, FileDisposition } from "./disposition.js";
import { createEmptyDirPruner, type EmptyDirPruner } from "./emptyDirs.js";
import { currentIdentity, readVersion, type Identity } from "./fileVersion.js";
import { FileSchedule } from "./fileSchedule.js";
import { dueRecords, refreshRecords } from "./fingerprintRefresh.js";
import { FingerprintStore } from "./fingerprintStore.js";
import { OpenWriters, type OpenWriter } from "./openWriters.js";
import type { TrackedFile } from "./trackedFile.js";
import { NetworkPhaseError, VersionPublisher, type PublishOutcome } from "./versionPublisher.js";

/** How often the broker is probed while it is unavailable. */
const OUTAGE_PROBE_MS = 1000;
/** Published files being recorded and archived, per CONCURRENCY slot, at most. */
const POST_PUBLISH_FACTOR = 4;
/** Fingerprint records rewritten at once when files left in place need theirs refreshed. */
const FINGERPRINT_REFRESH_CONCURRENCY = 8;

type AttemptResult =
  | Exclude<PublishOutcome, { kind: "changed" }>
  | { kind: "changed"; identity?: Identity }
  | { kind: "vanished" }
  | { kind: "writing"; writer: OpenWriter };

export interface DirectorySourceOptions {
  config: ConsumerConfig;
  nc: NatsConnection;
  log: Logger;
  metrics?: ConsumerMetrics;
  /** Identifies this replica in publish claims (default: a random UUID). */
  instanceId?: string;
  /** Where each file's progress is recorded (DESIGN §8); unset with STATUS=off. */
  status?: StatusLedger | undefined;
  /** The working window (tests use a small one; default DEFAULT_WINDOW). */
  window?: WindowLimits | undefined;
}

export interface DirectorySourceStats {
  tracked: number;
  waiting: number;
  ready: number;
  active: number;
  backoff: number;
  done: number;
  failed: number;
  scans: number;
  watchedDirectories: number;
  outage: boolean;
}

/**
 * The directory source: discovers files in INPUT_DIR (polling + fs events),
 * waits until each is completely written, publishes it once as an envelope
 * (inline or through the Object Store), then deletes, archives or leaves it;
 * retries failures with backoff and moves what finally fails to ERROR_DIR.
 *
 * Bookkeeping is one record per file path, never a file handle or buffer:
 * at most CONCURRENCY files are open or in memory at a time, oldest mtime first.
 */
export class DirectorySource implements AsyncDisposable {
  readonly #config: ConsumerConfig;
  readonly #nc: NatsConnection;
  readonly #log: Logger;
  readonly #metrics: ConsumerMetrics | undefined;
  readonly #scanner: DirectoryScanner;
  readonly #disposition: FileDisposition;
  /** Subdirectories emptied by archiving or deleting, removed once they stay empty for STABILITY_MS. */
  readonly #emptyDirs: EmptyDirPruner;
  readonly #publisher: VersionPublisher;
  readonly #openWriters: OpenWriters;
  /** INPUT_DIR's real path + "/": what /proc shows for files open under it. */
  readonly #realPrefix: string;
  readonly #claims: ClaimStore;
  readonly #fingerprints: FingerprintStore;
  readonly #jsm: JetStreamManager;
  readonly #abort = new AbortController();

  readonly #schedule: FileSchedule;
  readonly #discovery: Discovery;

  readonly #workers = new Set<Promise<void>>();
  /** Of those, uploads to the Object Store at once (LARGE_FILE_CONCURRENCY). */
  readonly #uploadSlots: Semaphore;
  /** Workers before their PubAck: CONCURRENCY bounds these (reading, uploading, publishing). */
  #publishing = 0;
  readonly #background = new Set<Promise<void>>();

  #firstScan: Promise<void>;

  #refreshing = false;
  /** Neither deleted nor archived: published files stay in INPUT_DIR. */
  readonly #leavesFiles: boolean;

  readonly #status: StatusLedger | undefined;
  #connected = true;
  #statusIterator: AsyncIterable<unknown> | undefined;
  #epoch = 0;
  #outage = false;
  #stopping = false;
  #closed: Promise<void> | undefined;

  private constructor(
    options: DirectorySourceOptions,
    stores: { claims: ClaimStore; fingerprints: FingerprintStore; jsm: JetStreamManager },
  ) {
    const { config } = options;
    this.#config = config;
    this.#leavesFiles = dispositionStrategy(config) === "leave";
    this.#nc = options.nc;
    this.#log = options.log;
    this.#metrics = options.metrics;
    this.#claims = stores.claims;
    this.#fingerprints = stores.fingerprints;
    this.#jsm = stores.jsm;
    this.#status = options.status;
    this.#uploadSlots = createSemaphore(Math.min(config.CONCURRENCY, config.LARGE_FILE_CONCURRENCY));
    this.#scanner = new DirectoryScanner({
      inputDir: config.INPUT_DIR,
      filePattern: config.FILE_PATTERN,
      excludePatterns: config.EXCLUDE_PATTERNS,
      readyMarkerSuffix: config.READY_MARKER_SUFFIX,
      followSymlinks: config.FOLLOW_SYMLINKS,
      excludedDirs: [config.ARCHIVE_DIR, config.ERROR_DIR],
    });
    const realRoot = realPathOf(this.#scanner.root);
    this.#realPrefix = `${realRoot}/`;
    this.#openWriters = new OpenWriters(realRoot);
    this.#disposition = new FileDisposition({
      config,
      absolute: (rel) => this.#scanner.absolute(rel),
      onMarkerGone: (rel) => this.#schedule.markers.delete(rel),
      log: options.log,
    });
    this.#emptyDirs = createEmptyDirPruner({
      root: this.#scanner.root,
      minAgeMs: config.STABILITY_MS,
      log: options.log,
    });
    this.#publisher = new VersionPublisher({
      config,
      nc: options.nc,
      claims: stores.claims,
      fingerprints: stores.fingerprints,
      log: options.log,
      signal: this.#abort.signal,
      stopping: () => this.#stopping,
      track: (p) => this.#track(p),
      status: options.status,
    });
    this.#schedule = new FileSchedule({
      stabilityMs: config.STABILITY_MS,
      readyMarkers: config.READY_MARKER_SUFFIX !== undefined,
      log: options.log,
      onDue: () => this.#pump(),
      limits: options.window ?? windowLimits(config.DISCOVERY_WINDOW),
    });
    this.#discovery = new Discovery({
      config,
      scanner: this.#scanner,
      schedule: this.#schedule,
      log: options.log,
      metrics: options.metrics,
      drop: (rec) => this.#drop(rec),
      dropSettled: (view) => this.#forgetFingerprint(view.fingerprint, "(settled)"),
      afterPoll: () => {
        this.#refreshFingerprints();
        void this.#emptyDirs.prune();
      },
    });
    this.#followConnection();
    this.#firstScan = this.#discovery.start();
  }

  /** Opens the KV buckets (provisioned beforehand) and starts discovery. */
  static async start(options: DirectorySourceOptions): Promise<DirectorySource> {
    const names = jetstreamNames(options.config);
    const instance = options.instanceId ?? randomUUID();
    const [claims, fingerprints, jsm] = await Promise.all([
      ClaimStore.open(options.nc, names.claimBucket, instance),
      FingerprintStore.open(options.nc, names.fingerprintBucket),
      jetstreamManager(options.nc, { timeout: 2000, checkAPI: false }),
    ]);
    return new DirectorySource(options, { claims, fingerprints, jsm });
  }

  /** Resolves once the first full scan has been processed (tests, readiness). */
  firstScan(): Promise<void> {
    return this.#firstScan;
  }

  stats(): DirectorySourceStats {
    const s: DirectorySourceStats = {
      tracked: this.#schedule.files.size,
      waiting: 0,
      ready: 0,
      active: 0,
      backoff: 0,
      done: 0,
      failed: 0,
      scans: this.#discovery.scans,
      watchedDirectories: this.#discovery.watchedDirectories,
      outage: this.#outage,
    };
    for (const f of this.#schedule.files.values()) s[f.state]++;
    const settled = this.#schedule.settled.counts();
    s.tracked += this.#schedule.settled.size;
    s.done += settled.done;
    s.failed += settled.failed;
    return s;
  }

  // -------------------------------------------------------------------------
  // Connection state: a broker outage is not a file failure.

  #followConnection(): void {
    const status = this.#nc.status();
    this.#statusIterator = status;
    void (async () => {
      for await (const s of status) {
        if (s.type === "disconnect") {
          this.#connected = false;
          this.#epoch++;
        } else if (s.type === "reconnect") {
          this.#connected = true;
          this.#epoch++;
          this.#pump();
        }
      }
    })().catch(() => undefined);
  }

  async #jetStreamAvailable(): Promise<boolean> {
    if (!this.#connected) return false;
    try {
      await natsReadiness(this.#nc, this.#jsm, 2000);
      // JetStream answering is not enough: in a cluster, a stream we write to
      // has no leader for a while after a node loss (its publishes get "no
      // responders"). That is an outage, not the file's fault.
      const names = jetstreamNames(this.#config);
      const streams = [names.stream, names.payloadStream, names.claimStream, names.fingerprintStream];
      const leaders = await Promise.all(
        streams.map((s) =>
          withTimeout(this.#jsm.streams.info(s), 2000, `no answer about stream ${s} within 2000 ms`).then(
            (si) => !si.cluster || !!si.cluster.leader,
            (err: unknown) => {
              // A deleted stream is not an outage that ends by itself: files fail
              // (and reach ERROR_DIR) so an operator sees it, as for any PubAck failure.
              if (isStreamNotFound(err)) return true;
              throw err;
            },
          ),
        ),
      );
      return leaders.every(Boolean);
    } catch {
      return false;
    }
  }

  #enterOutage(reason: string): void {
    if (this.#outage || this.#stopping) return;
    this.#outage = true;
    this.#log.warn({ reason }, "NATS/JetStream unavailable; files wait until it is back");
    void (async () => {
      const started = Date.now();
      while (!this.#stopping) {
        await sleep(OUTAGE_PROBE_MS, undefined, { signal: this.#abort.signal }).catch(() => undefined);
        if (this.#stopping) return;
        if (await this.#jetStreamAvailable()) break;
      }
      this.#outage = false;
      this.#log.info({ outageMs: Date.now() - started }, "NATS/JetStream available again; resuming");
      this.#pump();
    })();
  }

  #pump(): void {
    while (
      !this.#stopping &&
      !this.#outage &&
      this.#connected &&
      this.#publishing < this.#config.CONCURRENCY &&
      // Published files still being recorded and archived hold no slot, but are bounded too.
      this.#workers.size < this.#config.CONCURRENCY * POST_PUBLISH_FACTOR
    ) {
      const rec = this.#schedule.popReady();
      if (!rec) break;
      rec.state = "active";
      this.#publishing++;
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        this.#publishing--;
        this.#pump();
      };
      const worker = this.#run(rec, release).catch((err: unknown) => {
        this.#log.error({ err, path: rec.rel }, "unexpected error handling file");
        if (rec.state === "active") this.#schedule.retryLater(rec, this.#config.RETRY_BACKOFF_MS);
      });
      this.#workers.add(worker);
      void worker.finally(() => {
        this.#workers.delete(worker);
        if (released) this.#pump();
        else release();
      });
    }
  }

  // -------------------------------------------------------------------------
  // One attempt at one file.

  /** `release` frees the file's CONCURRENCY slot once its envelope is stored (PubAck). */
  async #run(rec: TrackedFile, release: () => void): Promise<void> {
    const attempt = rec.attempts + 1;
    const t0 = performance.now();
    const now = new Date();
    rec.firstAttemptAt ??= now;
    rec.lastAttemptAt = now;
    const epoch = this.#epoch;
    this.#metrics?.inFlight.inc();
    try {
      let result: AttemptResult;
      try {
        result = await this.#attempt(rec, release);
      } catch (err) {
        await this.#handleFailure(rec, attempt, err, epoch, t0);
        return;
      }
      this.#handleResult(rec, attempt, result, t0);
    } finally {
      this.#metrics?.inFlight.dec();
    }
  }

  #handleResult(rec: TrackedFile, attempt: number, result: AttemptResult, t0: number): void {
    const durationMs = Math.round(performance.now() - t0);
    switch (result.kind) {
      case "published":
      case "already": {
        const env = result.envelope;
        const published = result.kind === "published";
        this.#log.info(
          {
            fileId: env.id,
            path: rec.rel,
            size: env.size,
            sha256: env.sha256,
            outcome: published ? "published" : "skipped",
            attempts: attempt,
            durationMs,
            sinceDetectedMs: Date.now() - rec.detectedAt.getTime(),
            payload: env.payload.kind,
            disposition: result.disposition,
            ...(published && result.duplicate ? { duplicate: true } : {}),
            ...(result.movedTo ? { movedTo: result.movedTo } : {}),
          },
          published ? "file published" : "file already published",
        );
        this.#metrics?.fileOutcome({
          outcome: published ? "published" : "skipped",
          source: this.#config.SOURCE,
          bytes: env.size,
          durationMs,
        });
        if (result.disposition === "left") {
          this.#schedule.settle(rec, "done");
          rec.attempts = 0;
        } else if (result.disposition === "superseded") {
          this.#log.info(
            { fileId: env.id, path: rec.rel },
            "the path now holds a newer version of the file; it was left in place for its own turn",
          );
          this.#restat(rec);
        } else {
          this.#forget(rec);
          this.#emptyDirs.noteEmptied(rec.rel);
        }
        return;
      }
      case "changed":
        this.#log.debug({ path: rec.rel }, "file changed while being read; waiting until it is complete");
        if (result.identity) {
          rec.size = result.identity.size;
          rec.mtimeMs = result.identity.mtimeMs;
          rec.ino = result.identity.ino;
          rec.ctimeMs = result.identity.ctimeMs;
        }
        rec.detectedAt = new Date();
        rec.attempts = 0;
        rec.firstAttemptAt = undefined;
        rec.sawWrites = true;
        this.#schedule.startWaiting(rec, Date.now());
        return;
      case "vanished":
        this.#log.info(
          { path: rec.rel, size: rec.size, outcome: "vanished", attempts: attempt, durationMs },
          "file vanished before it was published",
        );
        this.#forget(rec);
        return;
      case "writing":
        if (!rec.heldOpen) {
          rec.heldOpen = true;
          this.#log.info(
            { path: rec.rel, size: rec.size, pid: result.writer.pid, command: result.writer.command },
            "file unchanged for STABILITY_MS but still open for writing by another process; waiting until it is closed",
          );
        }
        this.#schedule.startWaiting(rec, Date.now());
        return;
      case "held":
        this.#log.debug({ path: rec.rel }, "file claimed by another replica; checking again later");
        this.#schedule.retryLater(rec, this.#config.POLL_INTERVAL_MS);
        return;
      case "abandoned":
        // Shutting down: the file stays untouched for the next start.
        rec.state = "waiting";
        return;
    }
  }

  /**
   * A path no longer listed: forget it. A published file left in place that is
   * really gone no longer needs its fingerprint record (a file put there later
   * is a new version: new inode or ctime).
   */
  #drop(rec: TrackedFile): void {
    this.#schedule.delete(rec);
    const fingerprint = rec.fingerprint;
    if (rec.state !== "done" || !fingerprint || !this.#leavesFiles) return;
    // Only when it is surely gone: an unreadable directory hides files that are still there.
    if (currentIdentity(this.#scanner.absolute(rec.rel), false) !== undefined) return;
    this.#forgetFingerprint(fingerprint, rec.rel);
  }

  #forgetFingerprint(fingerprint: string | undefined, path: string): void {
    if (!fingerprint || !this.#leavesFiles) return;
    this.#track(
      this.#fingerprints.forget(fingerprint).catch((err: unknown) => {
        this.#log.debug({ err, path }, "could not forget the fingerprint of a removed file; it expires");
      }),
    );
  }

  /** Leave-in-place: rewrites the fingerprint records that are due (see fingerprintRefresh), after a poll. */
  #refreshFingerprints(): void {
    const ttl = this.#fingerprints.ttlMs;
    if (ttl <= 0 || !this.#leavesFiles || this.#refreshing) return;
    const items = dueRecords(this.#schedule.files.values(), this.#schedule.settled, Date.now() - ttl / 2);
    this.#refreshing = true;
    const run = refreshRecords(items, this.#fingerprints, {
      concurrency: FINGERPRINT_REFRESH_CONCURRENCY,
      stopping: () => this.#stopping,
      log: this.#log,
    }).then((files) => {
      // Nothing due (the usual poll): no line; failures have their own.
      if (files > 0) this.#log.info({ files }, "refreshed the fingerprint records of files left in place");
    });
    this.#track(run.finally(() => (this.#refreshing = false)));
  }

  /** Takes up what the path holds now as a new version (or forgets it when nothing is there). */
  #restat(rec: TrackedFile): void {
    const current = currentIdentity(this.#scanner.absolute(rec.rel), rec.target !== undefined);
    if (!current) {
      this.#forget(rec);
      return;
    }
    rec.size = current.size;
    rec.mtimeMs = current.mtimeMs;
    rec.ino = current.ino;
    rec.ctimeMs = current.ctimeMs;
    rec.detectedAt = new Date();
    rec.attempts = 0;
    rec.firstAttemptAt = undefined;
    this.#schedule.startWaiting(rec, Date.now());
  }

  #forget(rec: TrackedFile): void {
    this.#schedule.delete(rec);
    this.#schedule.markers.delete(rec.rel);
  }

  async #handleFailure(rec: TrackedFile, attempt: number, raw: unknown, epoch: number, t0: number): Promise<void> {
    const durationMs = Math.round(performance.now() - t0);
    if (this.#stopping) {
      rec.state = "waiting";
      return;
    }
    const err: FilerelayError = isFilerelayError(raw)
      ? raw
      : new SourceError("FILE_READ_FAILED", `reading ${rec.rel} failed`, { cause: raw });
    if (err instanceof NetworkPhaseError || err.code === "PAYLOAD_UPLOAD_FAILED") {
      const outage = !this.#connected || this.#epoch !== epoch || !(await this.#jetStreamAvailable());
      if (outage) {
        // Not the file's fault: back in the queue, attempt not counted.
        this.#log.debug({ path: rec.rel, reason: describeError(err) }, "broker unavailable; file waits");
        this.#schedule.makeReady(rec);
        this.#enterOutage(describeError(err));
        return;
      }
    }
    rec.attempts = attempt;
    const final = err.permanent || attempt > this.#config.MAX_RETRIES;
    const base = {
      ...(rec.fileId ? { fileId: rec.fileId } : {}),
      path: rec.rel,
      size: rec.size,
      attempts: attempt,
      durationMs,
      code: err.code,
      reason: describeError(err),
    };
    if (!final) {
      const retryInMs = backoffDelay(attempt - 1, { baseMs: this.#config.RETRY_BACKOFF_MS });
      this.#log.warn({ ...base, outcome: "retry", retryInMs }, "file attempt failed; retrying");
      this.#metrics?.fileOutcome({
        outcome: "retry",
        source: this.#config.SOURCE,
        bytes: rec.size,
        durationMs,
        code: err.code,
      });
      this.#schedule.retryLater(rec, retryInMs);
      return;
    }
    this.#metrics?.fileOutcome({
      outcome: "failed",
      source: this.#config.SOURCE,
      bytes: rec.size,
      durationMs,
      code: err.code,
    });
    if (err.code === "DISPOSE_FAILED") {
      // It was published: moving it to ERROR_DIR would say otherwise.
      this.#log.error({ ...base, outcome: "published-not-disposed" }, "file published but could not be disposed of");
      this.#schedule.settle(rec, "done");
      return;
    }
    const movedTo = await this.#disposition.moveToErrorDir(rec, err);
    if (movedTo === "superseded") {
      this.#log.warn(
        { ...base, outcome: "superseded" },
        "file failed, but its path now holds a newer version; that version gets its own attempts",
      );
      this.#restat(rec);
      return;
    }
    const errorPath = movedTo?.moved;
    await this.#status?.noteSource(
      {
        // A version never read has no content id: one from what identifies it on disk.
        id:
          rec.fileId ??
          fileVersionId(`filerelay-unread-v1\n${this.#config.SOURCE}\n${rec.rel}\n${rec.size}\n${rec.mtimeMs}`),
        source: this.#config.SOURCE,
        subject: rec.rel,
        size: rec.size,
        sha256: null,
        jobId: null,
        parentId: null,
      },
      "error",
      {
        code: err.code,
        reason: describeError(err),
        attempts: attempt,
        detectedAt: rec.detectedAt,
        supersede: true,
        ...(errorPath ? { location: pathToFileURL(errorPath).href } : {}),
      },
    );
    this.#log.error(
      { ...base, outcome: "failed", ...(errorPath ? { errorPath } : {}) },
      errorPath ? "file failed; moved to ERROR_DIR" : "file failed; left in place until it changes",
    );
    if (errorPath) {
      this.#forget(rec);
      this.#emptyDirs.noteEmptied(rec.rel);
    } else this.#schedule.settle(rec, "failed");
  }

  async #attempt(rec: TrackedFile, release: () => void): Promise<AttemptResult> {
    if (rec.size <= this.#config.INLINE_MAX_BYTES) return this.#attemptOnce(rec, release);
    // Uploads hold memory (the in-flight window): fewer at once than CONCURRENCY.
    // The turn is taken before the file is opened or claimed, so a claim is
    // never held (unrefreshed) while waiting.
    const releaseUpload = await this.#uploadSlots.acquire();
    try {
      return await this.#attemptOnce(rec, release);
    } finally {
      releaseUpload();
    }
  }

  /** One attempt: checks, reads the version, publishes it (claim → publish → record) and disposes of it. */
  async #attemptOnce(rec: TrackedFile, release: () => void): Promise<AttemptResult> {
    const config = this.#config;
    if (rec.refused) throw new SourceError("SYMLINK_REFUSED", rec.refused, { details: { path: rec.rel } });
    if (config.MAX_FILE_SIZE !== undefined && rec.size > config.MAX_FILE_SIZE) {
      throw new SourceError(
        "FILE_TOO_LARGE",
        `${rec.rel} has ${rec.size} bytes, more than MAX_FILE_SIZE (${config.MAX_FILE_SIZE})`,
      );
    }
    if (!config.READY_MARKER_SUFFIX && rec.sawWrites) {
      // Quiet for STABILITY_MS but still open for writing: a writer that paused, not a finished file.
      // Only for files seen being written (a snapshot of /proc costs ~1 ms per 60 open files on the host).
      const writer = this.#openWriters.writerOf(rec.target ?? `${this.#realPrefix}${rec.rel}`, rec.observedAt);
      if (writer) return { kind: "writing", writer };
    }
    // O_NONBLOCK: a FIFO swapped in since the scan must not block a worker.
    let path = this.#scanner.absolute(rec.rel);
    let flags = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
    if (rec.target !== undefined) {
      const resolved = await this.#scanner.resolveSymlink(rec.rel);
      if (!resolved) return { kind: "vanished" };
      if ("refused" in resolved) throw new SourceError("SYMLINK_REFUSED", resolved.refused);
      if ("notFile" in resolved) throw new SourceError("FILE_NOT_REGULAR", `${rec.rel} no longer links to a file`);
      path = resolved.target;
      flags = constants.O_RDONLY | constants.O_NONBLOCK;
    }
    // The identity observed STABILITY_MS ago.
    const identity: Identity = { size: rec.size, mtimeMs: rec.mtimeMs, ino: rec.ino, ctimeMs: rec.ctimeMs };
    const read = await readVersion(path, flags, identity, config.INLINE_MAX_BYTES, rec.rel);
    if (read.kind !== "read") return read;
    return this.#publisher.publish(rec, identity, read, release, () => this.#disposition.dispose(rec, identity));
  }

  /** Keeps a background promise until it settles, so close() can wait for it. */
  #track(p: Promise<unknown>): void {
    const settled = p.then(
      () => undefined,
      () => undefined,
    );
    this.#background.add(settled);
    void settled.finally(() => this.#background.delete(settled));
  }

  // -------------------------------------------------------------------------

  /**
   * Stops discovery, lets in-flight files finish (up to SHUTDOWN_TIMEOUT_MS;
   * files not yet published are abandoned untouched), and releases everything.
   */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#stopping = true;
      this.#schedule.stop();
      const discoveryClosed = this.#discovery.close();
      // Uploads of large files are abandoned at once (the object is purged);
      // small files in flight finish, bounded by SHUTDOWN_TIMEOUT_MS.
      this.#abort.abort(new FilerelayError("SHUTDOWN", "the consumer is shutting down"));
      const deadline = sleep(this.#config.SHUTDOWN_TIMEOUT_MS, "timeout" as const, { ref: false });
      const outcome = await Promise.race([
        Promise.allSettled([...this.#workers]).then(() => "done" as const),
        deadline,
      ]);
      if (outcome === "timeout") {
        this.#log.warn({ inFlight: this.#workers.size }, "shutdown timeout: abandoning in-flight files");
      }
      await Promise.race([Promise.all([...this.#background]), sleep(2000, undefined, { ref: false })]);
      await withTimeout(this.#claims.close(), 2000, "claims close timed out").catch(() => undefined);
      const it = this.#statusIterator as { stop?: () => void } | undefined;
      it?.stop?.();
      await discoveryClosed;
    })();
    return this.#closed;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Starts the directory source (factory). */
export function startDirectorySource(options: DirectorySourceOptions): Promise<DirectorySource> {
  return DirectorySource.start(options);
}

import { statfs } from "node:fs/promises";
import { isAbsolute } from "node:path";
import { pathToFileURL } from "node:url";
import { jetstreamManager } from "@nats-io/jetstream";
import {
  ConfigError,
  connectNats,
  consumeFiles,
  createMetrics,
  startPayloadSweep,
  describeError,
  EnvelopeError,
  FilerelayError,
  natsReadiness,
  openServiceLedger,
  retentionRoots,
  SinkError,
  startHttpServer,
  startRetentionPruner,
  watchNatsConnection,
  writableDirectoryProblem,
  type Envelope,
  type FileContext,
  type FileOutcome,
  type FileResult,
  type Logger,
  type NatsConnection,
  type ProducerMetrics,
} from "@filerelay/core/internal";
import type { ProducerConfig } from "./config.js";
import { createOrganizer, type Organizer } from "./organizer.js";
import { OutageGate } from "./outageGate.js";
import { sinkFactories, type Sink, type SinkWriteResult } from "./sinks/index.js";

/**
 * Bytes available to this (unprivileged) process on `dir`'s filesystem. One
 * statfs(2) call: check-disk-space spawns `df` per call, which at thousands of
 * small files a second costs more than the writes themselves.
 */
export async function freeDiskSpace(dir: string): Promise<number> {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}

/**
 * Total size of `dir`'s filesystem, used and free (0 when the filesystem does
 * not report one). Read only once space is short, so never on the hot path.
 */
export async function diskCapacity(dir: string): Promise<number> {
  const s = await statfs(dir);
  return s.blocks * s.bsize;
}

/** While the output refuses writes, how often one delivery tries again (the others wait). */
const OUTPUT_PROBE_INTERVAL_MS = 2000;

/** How long a free-space reading is reused (at thousands of files a second, one statfs per file shows in profiles). */
const FREE_SPACE_CACHE_MS = 250;

/** freeDiskSpace, reused for FREE_SPACE_CACHE_MS per directory; a pre-check only (a full disk during a write is caught anyway). */
export function cachedFreeDiskSpace(): (dir: string) => Promise<number> {
  const cache = new Map<string, { at: number; free: Promise<number> }>();
  return (dir) => {
    const now = Date.now();
    const hit = cache.get(dir);
    if (hit && now - hit.at < FREE_SPACE_CACHE_MS) return hit.free;
    const free = freeDiskSpace(dir);
    if (cache.size > 1000) cache.clear();
    cache.set(dir, { at: now, free });
    free.catch(() => cache.delete(dir));
    return free;
  };
}

export interface FileHandlerDeps {
  config: ProducerConfig;
  sink: Sink;
  organizer?: Organizer;
  /** Free bytes on OUTPUT_DIR's filesystem (default: statfs); tests substitute it. */
  freeSpace?: (dir: string) => Promise<number>;
  /** Total size of OUTPUT_DIR's filesystem (default: statfs); tests substitute it. */
  capacity?: (dir: string) => Promise<number>;
  /** Told the sink's result of each successful write (metrics use it). */
  onWritten?: (envelope: Envelope, result: SinkWriteResult) => void;
}

/**
 * The producer's per-file work, as a consumeFiles() handler: validate against
 * this producer's limits, build the output path, check disk space, write
 * through the sink, and log one line with where the file landed. Throwing a
 * permanent FilerelayError dead-letters the envelope; anything else retries.
 */
export function createFileHandler(deps: FileHandlerDeps): (ctx: FileContext) => Promise<FileResult> {
  const { config, sink } = deps;
  const organizer = deps.organizer ?? createOrganizer(config);
  const freeSpace = deps.freeSpace ?? cachedFreeDiskSpace();
  const capacity = deps.capacity ?? diskCapacity;
  const allowed = config.ALLOWED_CONTENT_TYPES?.map((t) => t.toLowerCase());

  return async (ctx) => {
    const { envelope, log } = ctx;
    const started = Date.now();
    if (config.MAX_FILE_SIZE !== undefined && envelope.size > config.MAX_FILE_SIZE) {
      throw new EnvelopeError(
        "ENVELOPE_TOO_LARGE",
        `ce-filesize ${envelope.size} exceeds MAX_FILE_SIZE ${config.MAX_FILE_SIZE}`,
      );
    }
    if (allowed && !contentTypeAllowed(envelope.contentType, allowed)) {
      throw new EnvelopeError(
        "CONTENT_TYPE_NOT_ALLOWED",
        `content type ${JSON.stringify(envelope.contentType)} is not in ALLOWED_CONTENT_TYPES (${allowed.join(", ")})`,
      );
    }
    const path = organizer.pathFor(envelope);
    const outputDir = config.SINK === "fs" ? config.OUTPUT_DIR : undefined;
    if (outputDir && config.DISK_SPACE_FACTOR > 0) {
      await requireDiskSpace(outputDir, envelope.size, config.DISK_SPACE_FACTOR, { freeSpace, capacity }, log);
    }
    let result: SinkWriteResult;
    try {
      result = await sink.write({
        envelope,
        path,
        open: () => ctx.open(),
        progress: () => ctx.working(),
        signal: ctx.signal,
        log,
      });
    } catch (err) {
      // A full disk met during the write (the pre-check off or raced): retried, unless it can never fit.
      if (outputDir && err instanceof FilerelayError && err.code === "DISK_SPACE_LOW") {
        await requireFits(outputDir, envelope.size, capacity, log);
      }
      throw err;
    }
    // ctx.log already carries fileId and path (consumeFiles binds them); repeating them would duplicate JSON keys.
    log.info(
      {
        source: envelope.source,
        size: envelope.size,
        sha256: envelope.sha256,
        outcome: result.outcome,
        attempts: ctx.deliveryCount,
        durationMs: Date.now() - started,
        location: result.location,
      },
      result.outcome === "written" ? "file written" : `file ${result.outcome}`,
    );
    deps.onWritten?.(envelope, result);
    return { location: locationUri(result.location) };
  };
}

/** A sink's location as a URI for the status ledger: absolute paths become file:// URLs. */
export function locationUri(location: string): string {
  return isAbsolute(location) ? pathToFileURL(location).href : location;
}

/** `text/csv; charset=utf-8` matches `text/csv`, `text/*` and `*\/*`. */
export function contentTypeAllowed(contentType: string, allowed: readonly string[]): boolean {
  const type = (contentType.split(";")[0] ?? "").trim().toLowerCase();
  const major = type.split("/")[0];
  return allowed.some((a) => a === type || a === "*/*" || a === "*" || (a.endsWith("/*") && a.slice(0, -2) === major));
}

/**
 * Can a file of `size` bytes ever fit on a filesystem of `capacity` bytes in
 * all? When not, waiting for space is pointless: the file is dead-lettered
 * rather than retried forever. A capacity of 0 means unknown (not every
 * filesystem reports one): assumed to fit. DISK_SPACE_FACTOR's margin is not
 * counted: it is configuration, not a property of the file, so a file that
 * only the margin keeps out is retried until the operator changes it.
 */
export function canEverFit(size: number, capacity: number): boolean {
  return capacity <= 0 || size <= capacity;
}

async function requireDiskSpace(
  dir: string,
  size: number,
  factor: number,
  disk: { freeSpace: (dir: string) => Promise<number>; capacity: (dir: string) => Promise<number> },
  log: Logger,
): Promise<void> {
  let free: number;
  try {
    free = await disk.freeSpace(dir);
  } catch (err) {
    // The write itself will fail if the directory is really unusable; do not block on the check.
    log.warn({ outputDir: dir, err: describeError(err) }, "cannot check free disk space; writing anyway");
    return;
  }
  const required = Math.ceil(size * factor);
  if (free >= required) return;
  await requireFits(dir, size, disk.capacity, log);
  log.warn({ outputDir: dir, free, required, size, factor }, "not enough free disk space; will retry");
  throw new SinkError(
    "DISK_SPACE_LOW",
    `${free} bytes free on ${dir}, need ${required} (DISK_SPACE_FACTOR ${factor} × ${size} bytes)`,
    { details: { free, required, size, factor, outputDir: dir } },
  );
}

/** Throws the permanent FILE_EXCEEDS_DISK when `size` bytes can never fit on `dir`'s filesystem. */
async function requireFits(
  dir: string,
  size: number,
  capacity: (dir: string) => Promise<number>,
  log: Logger,
): Promise<void> {
  let total: number;
  try {
    total = await capacity(dir);
  } catch (err) {
    log.debug({ outputDir: dir, err: describeError(err) }, "cannot read the output filesystem's size");
    return;
  }
  if (canEverFit(size, total)) return;
  throw new SinkError(
    "FILE_EXCEEDS_DISK",
    `the file (${size} bytes) is larger than the whole filesystem of OUTPUT_DIR ${dir} (${total} bytes): ` +
      "it can never be written there; give OUTPUT_DIR a larger filesystem (or send such files to another " +
      "group), then republish the dead letter",
    { details: { size, capacity: total, outputDir: dir } },
  );
}

export interface RunProducerOptions {
  log: Logger;
  /** Aborted on SIGTERM/SIGINT: stop pulling, drain within SHUTDOWN_TIMEOUT_MS, return. */
  signal: AbortSignal;
}

/**
 * The producer service: connect, set up the sink (stale temp cleanup), serve
 * health/metrics, and consume the group's envelopes through consumeFiles()
 * (which provisions the stream, DLQ and group durable) until `signal` aborts.
 */
export async function runProducer(config: ProducerConfig, options: RunProducerOptions): Promise<void> {
  const { log, signal } = options;
  const factory = sinkFactories[config.SINK];
  if (!factory) throw new ConfigError([`SINK: the ${config.SINK} sink is not available in this build`]);
  const organizer = createOrganizer(config);

  // Disposed in reverse order: HTTP, connection watch, NATS (drained), sink, metrics.
  await using metrics = createMetrics("producer");
  await using sink = factory(config, { log: log.child({ sink: config.SINK }) });
  await sink.init();
  // Dead letters are also written there: a directory that cannot take them is refused now, not at the first one.
  const errorDirProblem = config.ERROR_DIR
    ? await writableDirectoryProblem(config.ERROR_DIR, { create: true })
    : undefined;
  if (errorDirProblem !== undefined) throw new ConfigError([`ERROR_DIR: ${errorDirProblem}`]);
  // Dated ERROR_DIR folders past ERROR_RETENTION_DAYS: removed at start, then hourly.
  await using _retention = startRetentionPruner({
    roots: retentionRoots([{ label: "ERROR_DIR", dir: config.ERROR_DIR, days: config.ERROR_RETENTION_DAYS }]),
    log,
  });

  const nc: NatsConnection = await connectNats(config, {
    name: `filerelay-producer-${config.PRODUCER_GROUP}`,
    log,
    signal,
  });
  await using _nats = {
    [Symbol.asyncDispose]: () => nc.drain().catch(() => nc.close()),
  };
  await using _watch = watchNatsConnection(nc, metrics);
  // Orphaned payload objects: one replica of the deployment sweeps per interval.
  await using _sweep = startPayloadSweep(nc, config, log);
  const jsm = await jetstreamManager(nc);
  metrics.trackPendingMessages(
    config.PRODUCER_GROUP,
    async () => (await jsm.consumers.info(config.STREAM, config.PRODUCER_GROUP)).num_pending,
  );
  await using _http =
    config.HTTP_PORT > 0
      ? await startHttpServer({
          port: config.HTTP_PORT,
          log,
          metrics,
          ready: async () => {
            await natsReadiness(nc, jsm);
            await sink.checkReady();
          },
        })
      : undefined;

  // Deliveries are recorded in the ledger (provisioned here too, so whichever service starts first creates it).
  const status = await openServiceLedger(nc, config, "producer", log);
  await using _status = status;
  const results = new Map<string, SinkWriteResult>();
  const handler = createFileHandler({
    config,
    sink,
    organizer,
    onWritten: (envelope, result) => results.set(envelope.id, result),
  });
  const onOutcome = (o: FileOutcome) => recordOutcome(metrics, config.PRODUCER_GROUP, o, results);
  const gate = new OutageGate({ probeIntervalMs: OUTPUT_PROBE_INTERVAL_MS });

  log.info({ group: config.PRODUCER_GROUP, sink: config.SINK }, "producer started");
  await consumeFiles(
    {
      nats: nc,
      group: config.PRODUCER_GROUP,
      subject: config.SUBJECT,
      stream: config.STREAM,
      concurrency: config.CONCURRENCY,
      objectConcurrency: config.LARGE_FILE_CONCURRENCY,
      signal,
      maxDeliver: config.MAX_DELIVER,
      backoffMs: config.RETRY_BACKOFF_MS,
      ackWaitMs: config.ACK_WAIT_MS,
      ...(config.ERROR_DIR ? { errorDir: config.ERROR_DIR } : {}),
      log,
      drainTimeoutMs: config.SHUTDOWN_TIMEOUT_MS,
      replicas: config.STREAM_REPLICAS,
      dlqLimits: { maxAgeMs: config.DLQ_MAX_AGE, maxBytes: config.DLQ_MAX_BYTES },
      // The handler logs the outcome line ("file written"); the SDK's own is debug.
      ackedLogLevel: "debug",
      onOutcome,
      status: status ?? false,
    },
    // filerelay_files_in_flight: deliveries being handled right now.
    async (ctx) => {
      metrics.inFlight.inc();
      try {
        // While the output refuses every write, deliveries wait here (and nothing more is pulled).
        const { probe } = await gate.pass(AbortSignal.any([signal, ctx.signal]));
        let ok = false;
        try {
          const result = await handler(ctx);
          ok = true;
          return result;
        } catch (err) {
          if (err instanceof FilerelayError && err.code === "OUTPUT_NOT_WRITABLE") {
            if (gate.closedBecause === undefined) log.warn({ err: err.message }, "output refuses writes; pausing");
            gate.close(err.message);
          }
          throw err;
        } finally {
          gate.settle(probe, ok);
        }
      } finally {
        metrics.inFlight.dec();
      }
    },
  );
  log.info("producer stopped");
}

function recordOutcome(
  metrics: ProducerMetrics,
  group: string,
  o: FileOutcome,
  results: Map<string, SinkWriteResult>,
): void {
  const bytes = o.envelope?.size ?? 0;
  const base = { group, bytes, durationMs: o.durationMs, ...(o.code ? { code: o.code } : {}) };
  if (o.outcome === "acked") {
    const result = o.envelope ? results.get(o.envelope.id) : undefined;
    if (o.envelope) results.delete(o.envelope.id);
    const written = result?.outcome === "written";
    metrics.fileOutcome({
      ...base,
      outcome: written ? "written" : "skipped",
      ...(written && o.envelope ? { endToEndMs: Date.now() - o.envelope.time.getTime() } : {}),
    });
  } else {
    if (o.envelope) results.delete(o.envelope.id);
    metrics.fileOutcome({ ...base, outcome: o.outcome === "retry" ? "retry" : "dead_lettered" });
  }
}

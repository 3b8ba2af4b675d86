import { tmpdir } from "node:os";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import {
  makeDirectory,
  connectNats,
  consumeFiles,
  createPayloadReleaser,
  jetstreamNames,
  natsReadiness,
  openServiceLedger,
  provision,
  startHttpServer,
  startPayloadSweep,
  watchNatsConnection,
  type Logger,
  type NatsConnection,
} from "@filerelay/core/internal";
import type { TransformerConfig } from "./config.js";
import { convertStep } from "./convert.js";
import { checkGroupBindings, wantedBindings } from "./groupBindings.js";
import type { Step } from "./item.js";
import { createTransformerMetrics } from "./metrics.js";
import { createStageHandler, removeStaleScratch } from "./stage.js";
import { unpackStep } from "./unpack.js";

export interface RunTransformerOptions {
  log: Logger;
  /** Aborted on SIGTERM/SIGINT: stop pulling, drain within SHUTDOWN_TIMEOUT_MS, return. */
  signal: AbortSignal;
}

/** The steps TRANSFORMS names, in its order. */
export function buildSteps(config: TransformerConfig): Step[] {
  return config.TRANSFORMS.map((name) =>
    name === "unpack"
      ? unpackStep({
          limits: {
            maxBytes: config.EXTRACT_MAX_BYTES,
            maxFiles: config.EXTRACT_MAX_FILES,
            maxRatio: config.EXTRACT_MAX_RATIO,
          },
          maxDepth: config.EXTRACT_MAX_DEPTH,
          keepOriginal: config.KEEP_ORIGINAL,
        })
      : convertStep({
          patterns: config.CONVERT_PATTERNS,
          compression: config.PARQUET_COMPRESSION,
          memoryLimit: config.CONVERT_MEMORY_LIMIT,
          threads: config.CONVERT_THREADS,
          tmpDir: config.TRANSFORM_TMP_DIR ?? tmpdir(),
          keepOriginal: config.KEEP_ORIGINAL,
        }),
  );
}

/**
 * The transformer service (DESIGN §7, §10): a consumeFiles() group on
 * SUBJECT whose handler runs TRANSFORMS and publishes the results on
 * OUTPUT_SUBJECT. The groups reading OUTPUT_SUBJECT (SINK_GROUPS) are
 * provisioned there before anything is consumed, so a result published
 * before its sinks start waits for them; a group already bound to another
 * subject stops the start with that message.
 */
export async function runTransformer(config: TransformerConfig, options: RunTransformerOptions): Promise<void> {
  const { log, signal } = options;
  const tmpDir = config.TRANSFORM_TMP_DIR ?? tmpdir();
  await makeDirectory(tmpDir);
  const stale = await removeStaleScratch(tmpDir);
  if (stale.length > 0) log.info({ removed: stale.length }, "removed scratch directories of crashed processes");

  await using metrics = createTransformerMetrics();
  const nc: NatsConnection = await connectNats(config, {
    name: `filerelay-transformer-${config.TRANSFORM_GROUP}`,
    log,
    signal,
  });
  await using _nats = {
    [Symbol.asyncDispose]: () => nc.drain().catch(() => nc.close()),
  };
  await using _watch = watchNatsConnection(nc, metrics);

  // A group bound to another subject is refused before anything is provisioned,
  // with the variable to change, rather than misrouting or failing half-way.
  await checkGroupBindings(await jetstreamManager(nc), config.STREAM, wantedBindings(config));

  // The output side first: the sinks' groups on OUTPUT_SUBJECT, and a duplicate
  // window long enough for a restarted transformer's redo to be dropped.
  await provision(
    nc,
    { STREAM: config.STREAM, SUBJECT: config.OUTPUT_SUBJECT, STREAM_REPLICAS: config.STREAM_REPLICAS },
    {
      log,
      groups: config.SINK_GROUPS,
      duplicateWindowMs: config.DUPLICATE_WINDOW_MS,
      dlqLimits: { maxAgeMs: config.DLQ_MAX_AGE, maxBytes: config.DLQ_MAX_BYTES },
    },
  );
  const jsm = await jetstreamManager(nc);
  const windowMs = (await jsm.streams.info(config.STREAM)).config.duplicate_window / 1_000_000;
  if (windowMs < config.ACK_WAIT_MS * 2) {
    log.warn(
      { duplicateWindowMs: windowMs, ackWaitMs: config.ACK_WAIT_MS },
      "the stream's duplicate window is shorter than two ACK_WAIT_MS: a redo after a crash may publish results twice",
    );
  }

  await using _sweep = startPayloadSweep(nc, config, log);
  const names = jetstreamNames(config);
  const releaser = createPayloadReleaser(nc, { stream: names.stream, bucket: names.payloadBucket, log });
  await using _releaser = { [Symbol.asyncDispose]: () => releaser.close() };

  await using _http =
    config.HTTP_PORT > 0
      ? await startHttpServer({
          port: config.HTTP_PORT,
          log,
          metrics,
          ready: () => natsReadiness(nc, jsm),
        })
      : undefined;

  // Results are recorded with their parent in the ledger; the consumed file's delivery to this group too.
  const status = await openServiceLedger(nc, config, "transformer", log, config.SINK_GROUPS);
  await using _status = status;
  const handler = createStageHandler({
    nc,
    status,
    js: jetstream(nc, { timeout: 10_000 }),
    steps: buildSteps(config),
    outputSubject: config.OUTPUT_SUBJECT,
    stream: config.STREAM,
    inlineMaxBytes: config.INLINE_MAX_BYTES,
    tmpDir,
    // A pass-through references the consumed file's object: pinned, so the
    // fast release at the input side's last ack leaves it to the sweep, which
    // keeps it while any envelope (this one on OUTPUT_SUBJECT) names it.
    pinObject: (name) => releaser.pin(name, `${config.TRANSFORM_GROUP}:pass-through`),
    onStep: (step, outcome, ms, code) => metrics.step(step, outcome, ms, code),
    onPublished: (_item, bytes, passThrough) => metrics.published(bytes, passThrough),
  });

  log.info(
    {
      group: config.TRANSFORM_GROUP,
      subject: config.SUBJECT,
      outputSubject: config.OUTPUT_SUBJECT,
      transforms: config.TRANSFORMS,
    },
    "transformer started",
  );
  await consumeFiles(
    {
      nats: nc,
      group: config.TRANSFORM_GROUP,
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
      onOutcome: (o) => metrics.fileOutcome(config.TRANSFORM_GROUP, o),
      status: status ?? false,
    },
    async (ctx) => {
      metrics.inFlight.inc();
      try {
        await handler(ctx);
      } finally {
        metrics.inFlight.dec();
      }
    },
  );
  log.info("transformer stopped");
}

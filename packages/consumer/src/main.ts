#!/usr/bin/env node
import { constants } from "node:fs";
import { access } from "node:fs/promises";
import {
  ConfigError,
  connectNats,
  openServiceLedger,
  createLogger,
  createMetrics,
  startPayloadSweep,
  natsReadiness,
  provision,
  redactConfig,
  retentionRoots,
  runService,
  startHttpServer,
  startRetentionPruner,
  watchNatsConnection,
  withTimeout,
  type ServiceContext,
} from "@filerelay/core/internal";
import { loadConsumerConfig } from "./config.js";
import { startDirectorySource } from "./directorySource.js";

/** Room left in a message for the envelope headers next to an inline body. */
const HEADER_ALLOWANCE_BYTES = 16 * 1024;

function aborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
}

async function main({ signal, setShutdownTimeout }: ServiceContext): Promise<void> {
  const config = await loadConsumerConfig();
  setShutdownTimeout(config.SHUTDOWN_TIMEOUT_MS);
  const log = createLogger(config, { service: "consumer", source: config.SOURCE });
  log.info({ config: redactConfig(config) }, "effective configuration");
  if (config.DELETE_AFTER_PROCESSING && config.ARCHIVE_DIR) {
    log.warn("DELETE_AFTER_PROCESSING=true: files are deleted, ARCHIVE_DIR is not used");
  }

  const metrics = createMetrics("consumer");
  let nc;
  try {
    nc = await connectNats(config, { name: `filerelay-consumer-${config.SOURCE}`, log, signal });
  } catch (err) {
    if (signal.aborted) return;
    throw err;
  }
  try {
    const maxPayload = nc.info?.max_payload;
    if (maxPayload !== undefined && config.INLINE_MAX_BYTES + HEADER_ALLOWANCE_BYTES > maxPayload) {
      throw new ConfigError([
        `INLINE_MAX_BYTES: ${config.INLINE_MAX_BYTES} does not fit the server's max_payload (${maxPayload} bytes) with the envelope headers; use at most ${maxPayload - HEADER_ALLOWANCE_BYTES}`,
      ]);
    }
    await provision(nc, config, {
      log,
      groups: config.SINK_GROUPS,
      sourceBuckets: true,
      claimTtlMs: config.CLAIM_TTL_MS,
      fingerprintTtlMs: config.FINGERPRINT_TTL_MS,
      dlqLimits: { maxAgeMs: config.DLQ_MAX_AGE, maxBytes: config.DLQ_MAX_BYTES },
    });
    // Orphaned payload objects: one replica of the deployment (consumers and producers) sweeps per interval.
    await using _sweep = startPayloadSweep(nc, config, log);
    // Dated folders past ARCHIVE_RETENTION_DAYS / ERROR_RETENTION_DAYS: removed at start, then hourly.
    await using _retention = startRetentionPruner({
      roots: retentionRoots([
        { label: "ARCHIVE_DIR", dir: config.ARCHIVE_DIR, days: config.ARCHIVE_RETENTION_DAYS },
        { label: "ERROR_DIR", dir: config.ERROR_DIR, days: config.ERROR_RETENTION_DAYS },
      ]),
      log,
    });
    // Keeps the natsConnected / natsReconnects metrics true to the connection.
    await using _connectionMetrics = watchNatsConnection(nc, metrics);
    // Each file's progress is recorded in the status ledger (STATUS=off: nowhere).
    const status = await openServiceLedger(nc, config, "consumer", log, config.SINK_GROUPS);
    await using _status = status;
    await using source = await startDirectorySource({ config, nc, log, metrics, status });
    const conn = nc;
    await using http =
      config.HTTP_PORT === 0
        ? undefined
        : await startHttpServer({
            port: config.HTTP_PORT,
            log,
            metrics,
            ready: async () => {
              await natsReadiness(conn);
              await access(config.INPUT_DIR, constants.R_OK | constants.X_OK);
            },
          });
    if (http) log.info({ port: http.port }, "serving /healthz, /readyz and /metrics");
    log.info({ inputDir: config.INPUT_DIR, subject: config.SUBJECT }, "consumer started");
    await aborted(signal);
    log.info("stopping: no new files; finishing in-flight ones");
    await source.close();
  } finally {
    // Drain flushes pending publishes; bounded in case the broker is gone.
    await withTimeout(nc.drain(), 10_000, "drain timed out").catch(() => nc.close());
    await metrics.close();
    log.info("consumer stopped");
  }
}

runService("filerelay-consumer", main);

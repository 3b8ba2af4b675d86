#!/usr/bin/env node
import { jetstream } from "@nats-io/jetstream";
import {
  makeDirectory,
  ConfigError,
  connectNats,
  openServiceLedger,
  createLogger,
  describeError,
  natsReadiness,
  provision,
  redactConfig,
  runService,
  startHttpServer,
  startPayloadSweep,
  watchNatsConnection,
  withTimeout,
  type ServiceContext,
} from "@filerelay/core/internal";
import { startBatcher } from "./batcher.js";
import { loadBatcherConfig } from "./config.js";
import { provisionEvents } from "./eventsStream.js";
import { LeaseLostError, startGroupLease } from "./groupLease.js";
import { createBatcherMetrics } from "./metrics.js";
import { startTcpInput } from "./tcpInput.js";

/** Room left in a message for headers next to an inline body or a TCP event. */
const HEADER_ALLOWANCE_BYTES = 16 * 1024;

function aborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
}

async function main({ signal, setShutdownTimeout }: ServiceContext): Promise<void> {
  const config = await loadBatcherConfig();
  setShutdownTimeout(config.SHUTDOWN_TIMEOUT_MS);
  const log = createLogger(config, { service: "batcher" });
  log.info({ config: redactConfig(config) }, "effective configuration");
  try {
    await makeDirectory(config.BATCH_SPOOL_DIR, { mode: 0o700 });
  } catch (err) {
    throw new ConfigError([`BATCH_SPOOL_DIR: cannot create ${config.BATCH_SPOOL_DIR}: ${(err as Error).message}`]);
  }

  const metrics = createBatcherMetrics();
  let nc;
  try {
    nc = await connectNats(config, { name: `filerelay-batcher-${config.BATCH_GROUP}`, log, signal });
  } catch (err) {
    if (signal.aborted) return;
    throw err;
  }
  try {
    const maxPayload = nc.info?.max_payload;
    if (maxPayload !== undefined) {
      const problems: string[] = [];
      if (config.INLINE_MAX_BYTES + HEADER_ALLOWANCE_BYTES > maxPayload) {
        problems.push(
          `INLINE_MAX_BYTES: ${config.INLINE_MAX_BYTES} does not fit the server's max_payload (${maxPayload} bytes) with the envelope headers`,
        );
      }
      if (config.TCP_PORT !== undefined && config.TCP_MAX_EVENT_BYTES > maxPayload) {
        problems.push(
          `TCP_MAX_EVENT_BYTES: ${config.TCP_MAX_EVENT_BYTES} exceeds the server's max_payload (${maxPayload} bytes)`,
        );
      }
      if (problems.length > 0) throw new ConfigError(problems);
    }
    await provision(nc, config, {
      log,
      groups: config.SINK_GROUPS,
      dlqLimits: { maxAgeMs: config.DLQ_MAX_AGE, maxBytes: config.DLQ_MAX_BYTES },
    });
    await provisionEvents(nc, config, log);
    await using _sweep = startPayloadSweep(nc, config, log);
    await using _connectionMetrics = watchNatsConnection(nc, metrics);
    const conn = nc;
    // Before the lease is held: a waiting replica answers /readyz with why it is not ready.
    await using lease = startGroupLease(nc, {
      stream: config.STREAM,
      eventsStream: config.EVENTS_STREAM,
      group: config.BATCH_GROUP,
      durationMs: config.BATCH_LEASE_MS,
      log,
    });
    await using _http =
      config.HTTP_PORT === 0
        ? undefined
        : await startHttpServer({
            port: config.HTTP_PORT,
            log,
            metrics,
            ready: async () => {
              if (!lease.held()) {
                throw new Error(`waiting for the lease of batch group ${config.BATCH_GROUP} (another replica works)`);
              }
              await natsReadiness(conn);
            },
          });
    if (!(await lease.acquire(signal))) {
      log.info("stopped while waiting for the lease");
      return;
    }
    // Each batch file is recorded in the status ledger (STATUS=off: nowhere).
    const status = await openServiceLedger(nc, config, "batcher", log, config.SINK_GROUPS);
    await using _status = status;
    await using batcher = await startBatcher({
      config,
      nc,
      log,
      metrics,
      status,
      guard: () => {
        if (!lease.held()) throw new LeaseLostError("LEASE_LOST", "no longer holding the lease of the batch group");
      },
    });
    await using tcp =
      config.TCP_PORT === undefined
        ? undefined
        : await startTcpInput({
            host: config.TCP_HOST,
            port: config.TCP_PORT,
            subject: config.TCP_SUBJECT,
            xml: config.BATCH_FORMAT === "xml",
            maxEventBytes: config.TCP_MAX_EVENT_BYTES,
            js: jetstream(nc, { timeout: 10_000 }),
            log,
            metrics,
          });
    log.info({ tcpPort: tcp?.port }, "batcher started");
    try {
      await Promise.race([aborted(signal), lease.lost]);
    } catch (err) {
      // Another replica may be working now: publish nothing more, exit and come back as a waiting replica.
      log.error({ err: describeError(err) }, "lost the lease of the batch group: stopping without publishing");
      await tcp?.close();
      await batcher.abandon();
      throw err;
    }
    log.info("stopping: closing the TCP listener, then publishing the open window");
    // The listener first: what it stored still goes into the last window.
    await tcp?.close();
    await batcher.close();
  } finally {
    await withTimeout(nc.drain(), 10_000, "drain timed out").catch(() => nc.close());
    await metrics.close();
    log.info("batcher stopped");
  }
}

runService("filerelay-batcher", main);

import type { FastifyInstance } from "fastify";
import { jetstreamManager } from "@nats-io/jetstream";
import {
  makeDirectory,
  ConfigError,
  connectNats,
  describeError,
  natsReadiness,
  openServiceLedger,
  provision,
  startPayloadSweep,
  watchNatsConnection,
  withTimeout,
  type Logger,
  type NatsConnection,
} from "@filerelay/core/internal";
import { loadApiKeys } from "./apiKeys.js";
import type { GatewayConfig } from "./config.js";
import { createGatewayMetrics } from "./metrics.js";
import { Publisher } from "./publisher.js";
import { ChunkStore } from "./chunked/chunkStore.js";
import { registerDashboard } from "./dashboard.js";
import { registerChunkedRoutes } from "./routes/chunked.js";
import { registerMultipartRoutes } from "./routes/multipart.js";
import { registerStatusRoutes } from "./routes/status.js";
import { registerUploadJobRoutes } from "./routes/uploads.js";
import { JobRunner } from "./jobs/jobRunner.js";
import { JobStore } from "./jobs/jobStore.js";
import { buildServer } from "./server.js";
import { registerTusRoutes } from "./tus/tusUploads.js";

export interface RunGatewayOptions {
  log: Logger;
  /** Aborted on SIGTERM/SIGINT: stop taking requests, let in-flight ones finish, return. */
  signal: AbortSignal;
}

export const GATEWAY_VERSION = "0.1.0";

/**
 * The gateway service: API keys, NATS (provisioning the stream and sink
 * groups, as every source does), the HTTP API, and the background work
 * (upload jobs, expiry of abandoned uploads) until `signal` aborts.
 */
export async function runGateway(config: GatewayConfig, options: RunGatewayOptions): Promise<void> {
  const { log, signal } = options;
  const keys = await loadApiKeys(config.GATEWAY_API_KEYS_FILE);
  try {
    await makeDirectory(config.GATEWAY_UPLOAD_DIR);
  } catch (err) {
    throw new ConfigError([`GATEWAY_UPLOAD_DIR: cannot create ${config.GATEWAY_UPLOAD_DIR}: ${describeError(err)}`]);
  }
  await using metrics = { ...createGatewayMetrics(), [Symbol.asyncDispose]: () => Promise.resolve() };

  let nc: NatsConnection;
  try {
    nc = await connectNats(config, { name: "filerelay-gateway", log, signal });
  } catch (err) {
    if (signal.aborted) return;
    throw err;
  }
  await using _nats = {
    [Symbol.asyncDispose]: () => withTimeout(nc.drain(), 10_000, "drain timed out").catch(() => nc.close()),
  };
  await provision(nc, config, {
    log,
    groups: config.SINK_GROUPS,
    dlqLimits: { maxAgeMs: config.DLQ_MAX_AGE, maxBytes: config.DLQ_MAX_BYTES },
  });
  await using _watch = watchNatsConnection(nc, metrics);
  await using _sweep = startPayloadSweep(nc, config, log);
  const jsm = await jetstreamManager(nc);
  // Each upload's progress is recorded in the status ledger (STATUS=off: nowhere, and the status API answers 503).
  const status = await openServiceLedger(nc, config, "gateway", log, config.SINK_GROUPS);
  await using _status = status;
  const publisher = new Publisher(nc, config, metrics, status);

  const app: FastifyInstance = await buildServer({
    config,
    keys,
    metrics,
    log,
    version: GATEWAY_VERSION,
    ready: () => natsReadiness(nc, jsm),
  });
  await registerDashboard(app);
  registerMultipartRoutes(app, { publisher, metrics });
  registerStatusRoutes(app, { config, nc, keys, status, metrics, log });
  const jobStore = await JobStore.open(nc, jsm, {
    stream: config.STREAM,
    replicas: config.STREAM_REPLICAS,
    maxAgeMs: config.STATUS_MAX_AGE,
  });
  const jobs = new JobRunner({ store: jobStore, publisher, config, log });
  await using _jobs = { [Symbol.asyncDispose]: () => jobs.close() };
  registerUploadJobRoutes(app, { runner: jobs, store: jobStore });
  const chunks = new ChunkStore(config.GATEWAY_UPLOAD_DIR);
  await chunks.init();
  registerChunkedRoutes(app, { config, store: chunks, publisher, metrics });
  const tus = registerTusRoutes(app, { config, keys, publisher, metrics, log });
  await using _expiry = startExpiry(config.UPLOAD_EXPIRY, log, [
    { name: "chunked", expire: (ms) => chunks.expire(ms).then((ids) => ids.length) },
    { name: "tus", expire: () => tus.expire() },
    // Not an expiry: finished tus uploads whose publish a crash interrupted are published on the same schedule.
    { name: "tus-finished", expire: () => tus.recover() },
  ]);

  try {
    await app.listen({ port: config.HTTP_PORT, host: config.HTTP_HOST });
  } catch (err) {
    throw new ConfigError([
      `HTTP_PORT: cannot listen on ${config.HTTP_HOST}:${config.HTTP_PORT}: ${describeError(err)}`,
    ]);
  }
  const address = app.server.address();
  const port = typeof address === "object" && address ? address.port : config.HTTP_PORT;
  log.info({ port, tls: Boolean(config.HTTP_TLS_CERT), keys: keys.size }, "gateway started");
  await jobs.resumeAll();

  await aborted(signal);
  log.info("stopping: no new requests; finishing in-flight ones");
  try {
    await withTimeout(app.close(), config.SHUTDOWN_TIMEOUT_MS, "in-flight requests did not finish in time");
  } catch (err) {
    log.warn({ err: describeError(err) }, "closing the remaining connections");
    app.server.closeAllConnections();
  }
  log.info("gateway stopped");
}

interface Expirable {
  name: string;
  /** Removes what has been abandoned for longer than `expiryMs`; resolves with how many. */
  expire(expiryMs: number): Promise<number>;
}

/** Removes abandoned partial uploads at start and then every UPLOAD_EXPIRY / 4 (at most hourly). */
function startExpiry(expiryMs: number, log: Logger, stores: Expirable[]): AsyncDisposable {
  let running: Promise<void> = Promise.resolve();
  const sweep = () => {
    running = (async () => {
      for (const store of stores) {
        try {
          const removed = await store.expire(expiryMs);
          if (removed > 0) log.info({ uploads: store.name, removed }, "expired abandoned uploads");
        } catch (err) {
          log.warn({ uploads: store.name, err: describeError(err) }, "expiring abandoned uploads failed");
        }
      }
    })();
  };
  sweep();
  const timer = setInterval(sweep, Math.min(Math.max(expiryMs / 4, 1000), 3_600_000));
  timer.unref();
  return {
    [Symbol.asyncDispose]: async () => {
      clearInterval(timer);
      await running;
    },
  };
}

function aborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
}

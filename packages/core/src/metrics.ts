import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { NatsConnection } from "@nats-io/transport-node";
import type { ErrorCode } from "./errors.js";
import { withTimeout } from "./http.js";

/**
 * Prometheus metrics of one filerelay service, on a registry of its own (never
 * prom-client's global one, so tests and several services in one process do
 * not collide). filerelay metrics are prefixed `filerelay_`; the default Node
 * process metrics keep their standard names (`process_*`, `nodejs_*`) so stock
 * Node.js dashboards work, and every series carries a `service` label.
 */

export type ServiceKind = "consumer" | "producer";

/**
 * What happened to one file (consumer) or one delivery (producer):
 * - `published` / `written`: done (PubAck received / durably written or uploaded);
 * - `skipped`: nothing to do (already published, ON_CONFLICT=skip, duplicate delivery);
 * - `retry`: this attempt failed and will be retried;
 * - `failed`: given up (consumer: moved to ERROR_DIR);
 * - `dead_lettered`: given up and republished on the DLQ (producer).
 */
export type ConsumerOutcome = "published" | "skipped" | "retry" | "failed";
export type ProducerOutcome = "written" | "skipped" | "retry" | "dead_lettered";

interface OutcomeBase {
  /** File size in bytes (ce-filesize on the producer side). */
  bytes: number;
  /** Time spent on this attempt (publish or write), milliseconds. */
  durationMs: number;
  /** For `retry`, `failed` and `dead_lettered`: why (counted in filerelay_errors_total). */
  code?: ErrorCode;
}

export interface ConsumerFileOutcome extends OutcomeBase {
  outcome: ConsumerOutcome;
  /** The consumer's SOURCE. */
  source: string;
}

export interface ProducerFileOutcome extends OutcomeBase {
  outcome: ProducerOutcome;
  /** The sink group (PRODUCER_GROUP). */
  group: string;
  /** Now minus ce-time, milliseconds: detection to landing. Observed for `written` only. */
  endToEndMs?: number;
}

interface BaseMetrics extends AsyncDisposable {
  service: ServiceKind;
  registry: Registry;
  /** Files being published (consumer) or written (producer) right now. */
  inFlight: Gauge;
  /** 1 while the NATS connection is up, 0 otherwise (kept by watchNatsConnection). */
  natsConnected: Gauge;
  natsReconnects: Counter;
  /** The exposition text served on /metrics. */
  text(): Promise<string>;
  /** Unregisters everything (the registry is empty afterwards). */
  close(): Promise<void>;
}

export interface ConsumerMetrics extends BaseMetrics {
  service: "consumer";
  /** Files in INPUT_DIR not yet handled (set after each scan). */
  pendingFiles: Gauge;
  fileOutcome(o: ConsumerFileOutcome): void;
}

export interface ProducerMetrics extends BaseMetrics {
  service: "producer";
  fileOutcome(o: ProducerFileOutcome): void;
  /**
   * Reports the group's backlog (messages not yet delivered) at scrape time,
   * e.g. `async () => (await jsm.consumers.info(stream, group)).num_pending`.
   * A failing or slow read leaves the previous value.
   */
  trackPendingMessages(group: string, read: () => Promise<number>): void;
}

export type Metrics = ConsumerMetrics | ProducerMetrics;

// Seconds. A small file relays in milliseconds; a multi-GB one takes minutes.
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
// End-to-end includes the consumer's stability wait and any queueing.
const LATENCY_BUCKETS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600];
const PENDING_READ_TIMEOUT_MS = 2000;

/** What every service's metrics start from (see serviceRegistry). */
export interface ServiceRegistry {
  registry: Registry;
  /** `registers` for the service's own metrics: [registry]. */
  registers: Registry[];
  /** 1 while the NATS connection is up, 0 otherwise (kept by watchNatsConnection). */
  natsConnected: Gauge;
  natsReconnects: Counter;
  /** Unregisters everything (the registry is empty afterwards). */
  close: () => Promise<void>;
}

/**
 * A registry of the service's own (never prom-client's global one), labelled
 * `service`, with Node's default metrics and the NATS connection metrics
 * every service exposes.
 */
export function serviceRegistry(service: string): ServiceRegistry {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  // prom-client samples the event-loop delay every 10 ms by default: a timer
  // firing 100 times a second, which was most of an idle service's CPU (about
  // 0.4 % of a CPU on its own). Every 100 ms still catches any stall that
  // matters for nodejs_eventloop_lag_* (the /healthz lag check samples separately).
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 100 });
  const registers = [registry];
  return {
    registry,
    registers,
    natsConnected: new Gauge({
      name: "filerelay_nats_connected",
      help: "1 while the NATS connection is up, 0 while disconnected or closed",
      registers,
    }),
    natsReconnects: new Counter({
      name: "filerelay_nats_reconnects_total",
      help: "Times the NATS connection was re-established after a disconnect",
      registers,
    }),
    close: () => {
      registry.clear();
      return Promise.resolve();
    },
  };
}

export function createMetrics(service: "consumer"): ConsumerMetrics;
export function createMetrics(service: "producer"): ProducerMetrics;
export function createMetrics(service: ServiceKind): Metrics;
export function createMetrics(service: ServiceKind): Metrics {
  const { registry, registers, natsConnected, natsReconnects, close } = serviceRegistry(service);
  const key = service === "consumer" ? "source" : "group";
  const files = new Counter({
    name: "filerelay_files_total",
    help:
      service === "consumer"
        ? "Files handled by the consumer, by source and outcome"
        : "Deliveries handled by the producer, by group and outcome",
    labelNames: [key, "outcome"],
    registers,
  });
  const bytes = new Counter({
    name: "filerelay_bytes_total",
    help: "Bytes of the files counted in filerelay_files_total, by outcome",
    labelNames: [key, "outcome"],
    registers,
  });
  const errors = new Counter({
    name: "filerelay_errors_total",
    help: "Failed attempts by error code (retry, failed and dead_lettered outcomes)",
    labelNames: [key, "outcome", "code"],
    registers,
  });
  const inFlight = new Gauge({
    name: "filerelay_files_in_flight",
    help: "Files being published (consumer) or written (producer) right now",
    registers,
  });

  const countOutcome = (label: string, o: OutcomeBase & { outcome: string }) => {
    files.inc({ [key]: label, outcome: o.outcome });
    bytes.inc({ [key]: label, outcome: o.outcome }, Math.max(0, o.bytes));
    if (o.outcome === "retry" || o.outcome === "failed" || o.outcome === "dead_lettered") {
      errors.inc({ [key]: label, outcome: o.outcome, code: o.code ?? "UNKNOWN" });
    }
  };
  const base = {
    registry,
    inFlight,
    natsConnected,
    natsReconnects,
    text: () => registry.metrics(),
    close,
    [Symbol.asyncDispose]: close,
  };

  if (service === "consumer") {
    const publishDuration = new Histogram({
      name: "filerelay_publish_duration_seconds",
      help: "Time to publish one file until JetStream's PubAck (payload upload included)",
      labelNames: ["source"],
      buckets: DURATION_BUCKETS,
      registers,
    });
    const pendingFiles = new Gauge({
      name: "filerelay_pending_files",
      help: "Files waiting in INPUT_DIR (seen by the last scan, not yet published)",
      registers,
    });
    return {
      ...base,
      service,
      pendingFiles,
      fileOutcome(o) {
        countOutcome(o.source, o);
        if (o.outcome === "published") publishDuration.observe({ source: o.source }, o.durationMs / 1000);
      },
    } satisfies ConsumerMetrics;
  }

  const writeDuration = new Histogram({
    name: "filerelay_write_duration_seconds",
    help: "Time to write one file durably (or upload and verify it) from delivery to ack",
    labelNames: ["group"],
    buckets: DURATION_BUCKETS,
    registers,
  });
  const endToEnd = new Histogram({
    name: "filerelay_end_to_end_latency_seconds",
    help: "From detection by the consumer (ce-time) to the file having landed",
    labelNames: ["group"],
    buckets: LATENCY_BUCKETS,
    registers,
  });
  const pendingReaders = new Map<string, () => Promise<number>>();
  new Gauge({
    name: "filerelay_pending_messages",
    help: "Envelopes in the stream not yet delivered to the group (its backlog)",
    labelNames: ["group"],
    registers,
    // Read at scrape time so the backlog costs nothing between scrapes.
    async collect() {
      await Promise.all(
        [...pendingReaders].map(async ([group, read]) => {
          try {
            this.set(
              { group },
              await withTimeout(read(), PENDING_READ_TIMEOUT_MS, `no answer within ${PENDING_READ_TIMEOUT_MS} ms`),
            );
          } catch {
            // NATS is unreachable: the connection gauge says so; keep the last value.
          }
        }),
      );
    },
  });
  return {
    ...base,
    service,
    fileOutcome(o) {
      countOutcome(o.group, o);
      if (o.outcome !== "written") return;
      writeDuration.observe({ group: o.group }, o.durationMs / 1000);
      // ce-time comes from another machine's clock: never record a negative latency.
      if (o.endToEndMs !== undefined) endToEnd.observe({ group: o.group }, Math.max(0, o.endToEndMs) / 1000);
    },
    trackPendingMessages(group, read) {
      pendingReaders.set(group, read);
    },
  } satisfies ProducerMetrics;
}

export interface ConnectionWatch extends AsyncDisposable {
  close(): Promise<void>;
}

/** The iterator nats.js returns from status() can be stopped at once; the public type does not say so. */
interface Stoppable {
  stop(): void;
}
function isStoppable(x: unknown): x is Stoppable {
  return typeof x === "object" && x !== null && typeof (x as { stop?: unknown }).stop === "function";
}

/**
 * Keeps `natsConnected` and `natsReconnects` true to the connection: follows
 * `nc.status()` (disconnect → 0, reconnect → 1 and +1) and the connection's
 * closing. close() stops following (the connection itself is left alone).
 */
export function watchNatsConnection(
  nc: NatsConnection,
  metrics: Pick<Metrics, "natsConnected" | "natsReconnects">,
): ConnectionWatch {
  metrics.natsConnected.set(nc.isClosed() ? 0 : 1);
  const status = nc.status();
  let stopped = false;
  const done = (async () => {
    for await (const s of status) {
      if (stopped) break;
      if (s.type === "disconnect" || s.type === "close") metrics.natsConnected.set(0);
      else if (s.type === "reconnect") {
        metrics.natsConnected.set(1);
        metrics.natsReconnects.inc();
      }
    }
  })().catch(() => undefined);
  void nc.closed().then(() => {
    if (!stopped) metrics.natsConnected.set(0);
  });
  const close = async () => {
    if (stopped) return;
    stopped = true;
    // Otherwise the loop ends at the next status event; nothing to wait for.
    if (isStoppable(status)) {
      status.stop();
      await done;
    }
  };
  return { close, [Symbol.asyncDispose]: close };
}

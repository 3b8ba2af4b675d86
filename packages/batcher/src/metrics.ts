import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { serviceRegistry } from "@filerelay/core/internal";
import type { RotationReason } from "./rotation.js";

/** The batcher's Prometheus metrics, on a registry of its own (names prefixed `filerelay_batcher_`). */
export interface BatcherMetrics extends AsyncDisposable {
  registry: Registry;
  natsConnected: Gauge;
  natsReconnects: Counter;
  /** Events taken into a window, by input (nats or tcp: the TCP listener's subject). */
  eventsIn: Counter<"input">;
  /** Events the TCP listener stored (PubAck) and acknowledged to its sender. */
  tcpEvents: Counter;
  tcpConnections: Gauge;
  batch(o: { reason: RotationReason; raw: boolean; bytes: number; events: number }): void;
  publishFailures: Counter;
  windowEvents: Gauge;
  windowBytes: Gauge;
  close(): Promise<void>;
}

const SIZE_BUCKETS = [1024, 16_384, 262_144, 1_048_576, 5_242_880, 16_777_216, 67_108_864, 268_435_456, 1_073_741_824];

export function createBatcherMetrics(): BatcherMetrics {
  const { registry, registers, natsConnected, natsReconnects, close } = serviceRegistry("batcher");
  const batches = new Counter({
    name: "filerelay_batcher_batches_total",
    help: "Batch files published, by why their window closed (time, size, shutdown)",
    labelNames: ["reason"],
    registers,
  });
  const rawFallbacks = new Counter({
    name: "filerelay_batcher_raw_fallbacks_total",
    help: "Batches that failed their well-formedness check and were published as …_raw",
    registers,
  });
  const batchBytes = new Histogram({
    name: "filerelay_batcher_batch_bytes",
    help: "Event bytes per published batch",
    buckets: SIZE_BUCKETS,
    registers,
  });
  const bytesOut = new Counter({
    name: "filerelay_batcher_bytes_total",
    help: "Event bytes in published batches",
    registers,
  });
  const eventsOut = new Counter({
    name: "filerelay_batcher_events_out_total",
    help: "Events in published batches (acknowledged on the events stream)",
    registers,
  });
  return {
    registry,
    natsConnected,
    natsReconnects,
    eventsIn: new Counter({
      name: "filerelay_batcher_events_total",
      help: "Events taken into a batch window, by input (nats, tcp)",
      labelNames: ["input"],
      registers,
    }),
    tcpEvents: new Counter({
      name: "filerelay_batcher_tcp_events_stored_total",
      help: "Events received over TCP, stored in the events stream and acknowledged to the sender",
      registers,
    }),
    tcpConnections: new Gauge({ name: "filerelay_batcher_tcp_connections", help: "Open TCP connections", registers }),
    publishFailures: new Counter({
      name: "filerelay_batcher_publish_failures_total",
      help: "Failed attempts to publish a batch (retried)",
      registers,
    }),
    windowEvents: new Gauge({ name: "filerelay_batcher_window_events", help: "Events in the open window", registers }),
    windowBytes: new Gauge({
      name: "filerelay_batcher_window_bytes",
      help: "Event bytes in the open window",
      registers,
    }),
    batch(o) {
      batches.inc({ reason: o.reason });
      if (o.raw) rawFallbacks.inc();
      batchBytes.observe(o.bytes);
      bytesOut.inc(o.bytes);
      eventsOut.inc(o.events);
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}

import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { serviceRegistry } from "@filerelay/core/internal";
import type { FileOutcome } from "@filerelay/core";

/**
 * The transformer's Prometheus metrics, on a registry of its own with the
 * same conventions as the other services (`filerelay_` prefix, a `service`
 * label, the standard Node process metrics).
 */
export interface TransformerMetrics extends AsyncDisposable {
  registry: Registry;
  inFlight: Gauge;
  natsConnected: Gauge;
  natsReconnects: Counter;
  /** One consumed file settled (acked, retried or dead-lettered). */
  fileOutcome(group: string, o: FileOutcome): void;
  /** One step ran on one file. */
  step(step: string, outcome: "done" | "failed", durationMs: number, code?: string): void;
  /** One result published: `passThrough` when it was the consumed file passed on by reference. */
  published(bytes: number, passThrough: boolean): void;
  close(): Promise<void>;
}

const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900];

export function createTransformerMetrics(): TransformerMetrics {
  const { registry, registers, natsConnected, natsReconnects, close } = serviceRegistry("transformer");
  const files = new Counter({
    name: "filerelay_files_total",
    help: "Consumed files handled by the transformer, by group and outcome (acked, retry, dead_lettered)",
    labelNames: ["group", "outcome"],
    registers,
  });
  const errors = new Counter({
    name: "filerelay_errors_total",
    help: "Failed attempts by error code",
    labelNames: ["group", "outcome", "code"],
    registers,
  });
  const bytes = new Counter({
    name: "filerelay_transform_bytes_total",
    help: "Bytes in (consumed files) and out (published results; a pass-through by reference counts 0)",
    labelNames: ["direction"],
    registers,
  });
  const steps = new Counter({
    name: "filerelay_transform_steps_total",
    help: "Files a step ran on, by step and outcome (done, failed) and error code",
    labelNames: ["step", "outcome", "code"],
    registers,
  });
  const stepDuration = new Histogram({
    name: "filerelay_transform_step_duration_seconds",
    help: "Time one step took on one file, publishing of its results included",
    labelNames: ["step"],
    buckets: DURATION_BUCKETS,
    registers,
  });
  const outputs = new Counter({
    name: "filerelay_transform_outputs_total",
    help: "Files published on OUTPUT_SUBJECT, by kind (derived, passed)",
    labelNames: ["kind"],
    registers,
  });
  const inFlight = new Gauge({
    name: "filerelay_files_in_flight",
    help: "Files being transformed right now",
    registers,
  });
  return {
    registry,
    inFlight,
    natsConnected,
    natsReconnects,
    fileOutcome(group, o) {
      const outcome = o.outcome === "dead-lettered" ? "dead_lettered" : o.outcome;
      files.inc({ group, outcome });
      if (o.outcome === "acked") bytes.inc({ direction: "in" }, o.envelope?.size ?? 0);
      else errors.inc({ group, outcome, code: o.code ?? "UNKNOWN" });
    },
    step(step, outcome, durationMs, code) {
      steps.inc({ step, outcome, code: code ?? "" });
      stepDuration.observe({ step }, durationMs / 1000);
    },
    published(n, passThrough) {
      outputs.inc({ kind: passThrough ? "passed" : "derived" });
      bytes.inc({ direction: "out" }, n);
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}

import { describe, expect, it } from "vitest";
import { createMetrics } from "./metrics.js";

/**
 * The value of the one sample of `name` whose labels include `labels` (label
 * order in the exposition text is not fixed, so lines are parsed, not matched).
 */
function value(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const found = text
    .split("\n")
    .map((line) => /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line))
    .filter((m): m is RegExpExecArray => m !== null && m[1] === name)
    .filter((m) => {
      const have = new Map([...(m[2] ?? "").matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
      return Object.entries(labels).every(([k, v]) => have.get(k) === v);
    });
  if (found.length > 1) throw new Error(`${found.length} samples of ${name} match ${JSON.stringify(labels)}`);
  return found[0] === undefined ? undefined : Number(found[0][3]);
}

describe("createMetrics", () => {
  it("counts consumer outcomes by source, bytes included, and times publishes", async () => {
    await using m = createMetrics("consumer");
    m.fileOutcome({ outcome: "published", source: "api", bytes: 100, durationMs: 20 });
    m.fileOutcome({ outcome: "published", source: "api", bytes: 50, durationMs: 2000 });
    m.fileOutcome({ outcome: "failed", source: "api", bytes: 7, durationMs: 5, code: "FILE_TOO_LARGE" });
    m.fileOutcome({ outcome: "retry", source: "api", bytes: 7, durationMs: 5 });
    m.pendingFiles.set(12);
    m.inFlight.inc();
    m.inFlight.inc();
    m.inFlight.dec();

    const text = await m.text();
    const svc = "consumer";
    expect(value(text, "filerelay_files_total", { source: "api", outcome: "published", service: svc })).toBe(2);
    expect(value(text, "filerelay_bytes_total", { source: "api", outcome: "published", service: svc })).toBe(150);
    expect(value(text, "filerelay_files_total", { source: "api", outcome: "failed", service: svc })).toBe(1);
    expect(
      value(text, "filerelay_errors_total", { source: "api", outcome: "failed", code: "FILE_TOO_LARGE", service: svc }),
    ).toBe(1);
    expect(
      value(text, "filerelay_errors_total", { source: "api", outcome: "retry", code: "UNKNOWN", service: svc }),
    ).toBe(1);
    // Only successful publishes are timed: 20 ms and 2 s.
    expect(value(text, "filerelay_publish_duration_seconds_count", { source: "api", service: svc })).toBe(2);
    expect(value(text, "filerelay_publish_duration_seconds_bucket", { le: "0.025", source: "api", service: svc })).toBe(
      1,
    );
    expect(value(text, "filerelay_publish_duration_seconds_sum", { source: "api", service: svc })).toBeCloseTo(2.02);
    expect(value(text, "filerelay_pending_files", { service: svc })).toBe(12);
    expect(value(text, "filerelay_files_in_flight", { service: svc })).toBe(1);
    // Default Node metrics under their standard names.
    expect(text).toMatch(/^process_cpu_user_seconds_total\{service="consumer"\} /m);
    expect(text).toContain("nodejs_eventloop_lag_seconds");
    // Producer-only series are absent.
    expect(text).not.toContain("filerelay_write_duration_seconds");
  });

  it("counts producer outcomes by group and records end-to-end latency, never negative", async () => {
    await using m = createMetrics("producer");
    m.fileOutcome({ outcome: "written", group: "g", bytes: 10, durationMs: 30, endToEndMs: 1500 });
    m.fileOutcome({ outcome: "written", group: "g", bytes: 10, durationMs: 30, endToEndMs: -200 });
    m.fileOutcome({ outcome: "dead_lettered", group: "g", bytes: 3, durationMs: 1, code: "PATH_UNSAFE" });

    const text = await m.text();
    const svc = "producer";
    expect(value(text, "filerelay_files_total", { group: "g", outcome: "written", service: svc })).toBe(2);
    expect(value(text, "filerelay_files_total", { group: "g", outcome: "dead_lettered", service: svc })).toBe(1);
    expect(
      value(text, "filerelay_errors_total", {
        group: "g",
        outcome: "dead_lettered",
        code: "PATH_UNSAFE",
        service: svc,
      }),
    ).toBe(1);
    expect(value(text, "filerelay_write_duration_seconds_count", { group: "g", service: svc })).toBe(2);
    expect(value(text, "filerelay_end_to_end_latency_seconds_count", { group: "g", service: svc })).toBe(2);
    expect(value(text, "filerelay_end_to_end_latency_seconds_sum", { group: "g", service: svc })).toBeCloseTo(1.5);
    expect(value(text, "filerelay_end_to_end_latency_seconds_bucket", { le: "0.1", group: "g", service: svc })).toBe(1);
    expect(text).not.toContain("filerelay_pending_files");
  });

  it("reads a group's backlog at scrape time and keeps the last value when the read fails", async () => {
    await using m = createMetrics("producer");
    let backlog: number | Error = 42;
    m.trackPendingMessages("g", () => (backlog instanceof Error ? Promise.reject(backlog) : Promise.resolve(backlog)));
    expect(value(await m.text(), "filerelay_pending_messages", { group: "g" })).toBe(42);
    backlog = 7;
    expect(value(await m.text(), "filerelay_pending_messages", { group: "g" })).toBe(7);
    backlog = new Error("NATS down");
    expect(value(await m.text(), "filerelay_pending_messages", { group: "g" })).toBe(7);
  });

  it("keeps registries apart and empties them on close", async () => {
    const a = createMetrics("consumer");
    const b = createMetrics("consumer");
    a.fileOutcome({ outcome: "published", source: "x", bytes: 1, durationMs: 1 });
    expect(await b.text()).not.toContain('source="x"');
    await a.close();
    expect((await a.text()).trim()).toBe("");
    await b.close();
  });
});

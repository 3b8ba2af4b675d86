import { lstat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { it } from "vitest";
import { waitFor } from "../support/index.js";
import { loadNote, machineInfo, percentile, writeResult } from "./benchSupport.js";
import { Pipeline } from "./pipeline.js";

const STABILITY_MS = 500;
const DURATION_MS = Number(process.env.BENCH_LATENCY_MS ?? 60_000);
const EVERY_MS = 200;

/** Benchmark 4: one 4 KiB file every 200 ms; latency = output visible − file closed. */
it("latency: 4 KiB every 200 ms, STABILITY_MS=500", async () => {
  await using pipe = await Pipeline.start({
    consumerEnv: { STABILITY_MS: String(STABILITY_MS), POLL_INTERVAL_MS: "5000" },
    producerEnv: { FILENAME_TEMPLATE: "{{.Name}}{{.Ext}}" },
  });
  await pipe.warmUp();
  const latencies: number[] = [];
  const pending: Promise<void>[] = [];
  const start = performance.now();
  for (let i = 0; performance.now() - start < DURATION_MS; i++) {
    const name = `lat-${i}.bin`;
    // The file is written and closed in one call: "closed" is when writeFile resolves.
    await writeFile(join(pipe.input, name), Buffer.alloc(4096, i % 251));
    const closed = Date.now();
    // Visible = the output's ctime (its link into place), so polling need not be fine-grained.
    pending.push(
      waitFor(() => lstat(join(pipe.output, name)).catch(() => undefined), { timeoutMs: 60_000, intervalMs: 50 }).then(
        (st) => {
          latencies.push(st.ctimeMs - closed);
        },
      ),
    );
    // Pacing the writer (this is the workload's schedule, not synchronization).
    await sleep(Math.max(0, start + (i + 1) * EVERY_MS - performance.now()));
  }
  const note = loadNote();
  await Promise.all(pending);
  latencies.sort((a, b) => a - b);
  await writeResult({
    name: "latency",
    takenAt: new Date().toISOString(),
    machine: await machineInfo(),
    metrics: {
      files: latencies.length,
      stabilityMs: STABILITY_MS,
      pollIntervalMs: 5000,
      p50Ms: Math.round(percentile(latencies, 50)),
      p95Ms: Math.round(percentile(latencies, 95)),
      p99Ms: Math.round(percentile(latencies, 99)),
      p99MinusStabilityMs: Math.round(percentile(latencies, 99) - STABILITY_MS),
    },
    notes: [
      "latency = ctime of the output file (its link into place) − the moment writeFile of the source resolved (file closed); target: p99 ≤ STABILITY_MS + 150 ms",
      note,
    ],
  });
});

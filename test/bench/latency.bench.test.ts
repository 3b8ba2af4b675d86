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
  const closedAt = new Map<string, number>();
  const pending: Promise<void>[] = [];
  const start = performance.now();
  for (let i = 0; performance.now() - start < DURATION_MS; i++) {
    const name = `lat-${i}.bin`;
    // The file is written and closed in one call: "closed" is when writeFile resolves.
    await writeFile(join(pipe.input, name), Buffer.alloc(4096, i % 251));
    const closed = Date.now();
    closedAt.set(name, closed);
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
  // Where the time goes, per file, from the services' own log lines (their
  // "time" is when the line was logged): detect = closed → the consumer's
  // first observation (a light scan after the fs event); wait+publish =
  // observation → "file published" (STABILITY_MS, then read, claim, publish,
  // archive); of which attempt = the attempt itself; deliver = "file
  // published" → the output's ctime (producer pull, write, link).
  const stage = {
    detect: [] as number[],
    waitPublish: [] as number[],
    attempt: [] as number[],
    deliver: [] as number[],
  };
  const ctimes = new Map<string, number>();
  for (const name of closedAt.keys()) {
    const st = await lstat(join(pipe.output, name)).catch(() => undefined);
    if (st) ctimes.set(name, st.ctimeMs);
  }
  for (const l of await pipe.consumer.logs()) {
    if (l.msg !== "file published" || typeof l.path !== "string") continue;
    const closed = closedAt.get(l.path);
    const ctime = ctimes.get(l.path);
    if (closed === undefined || ctime === undefined) continue;
    const published = Date.parse(String(l.time));
    const detected = published - Number(l.sinceDetectedMs);
    stage.detect.push(detected - closed);
    stage.waitPublish.push(published - detected);
    stage.attempt.push(Number(l.durationMs));
    stage.deliver.push(ctime - published);
  }
  const pcts = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    return `p50 ${Math.round(percentile(s, 50))} / p95 ${Math.round(percentile(s, 95))} / p99 ${Math.round(percentile(s, 99))} ms`;
  };
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
      `stages (${stage.detect.length} files; log times): detect ${pcts(stage.detect)}; wait+publish ${pcts(stage.waitPublish)}; of which attempt ${pcts(stage.attempt)}; deliver ${pcts(stage.deliver)}`,
      note,
    ],
  });
});

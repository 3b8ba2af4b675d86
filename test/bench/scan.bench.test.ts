import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { it } from "vitest";
import { cpuSecondsOf, machineInfo, makeFiles, writeResult } from "./benchSupport.js";
import { Pipeline } from "./pipeline.js";

const FILES = Number(process.env.BENCH_SCAN_FILES ?? 100_000);
const POLL_MS = 5000;
const IDLE_MS = Number(process.env.BENCH_IDLE_MS ?? 60_000);

/** Benchmark 5: one poll over 100,000 already-processed files left in place; idle CPU. */
it(`scan cost: ${FILES} resident files, leave-in-place`, async () => {
  await using pipe = await Pipeline.start({
    consumerEnv: { ARCHIVE_DIR: "", ERROR_DIR: "", POLL_INTERVAL_MS: String(POLL_MS), STABILITY_MS: "200" },
  });
  await pipe.warmUp();
  const tree = join(pipe.staging, "tree");
  await mkdir(tree, { recursive: true });
  await makeFiles(tree, FILES, () => 64, 100);
  const relayMs = await pipe.relayTree(tree, FILES, 30 * 60_000);

  // Idle: everything is processed; the consumer only polls. Measure its CPU over IDLE_MS.
  const cpu0 = await cpuSecondsOf(pipe.consumer.pid);
  const t0 = performance.now();
  await sleep(IDLE_MS); // a measurement window, not synchronization
  const cpuSec = (await cpuSecondsOf(pipe.consumer.pid)) - cpu0;
  const wallSec = (performance.now() - t0) / 1000;
  const polls = Math.max(1, Math.floor((wallSec * 1000) / POLL_MS));
  const scanLines = pipe.consumer
    .logs()
    .filter((l) => typeof l.durationMs === "number" && typeof l.files === "number" && /scan/i.test(String(l.msg)));
  const lastScan = scanLines.at(-1);
  await writeResult({
    name: "scan",
    takenAt: new Date().toISOString(),
    machine: await machineInfo(),
    metrics: {
      residentFiles: FILES,
      initialRelayFilesPerSec: Math.round(FILES / (relayMs / 1000)),
      idleWindowSec: Number(wallSec.toFixed(1)),
      idleCpuPercent: Number(((cpuSec / wallSec) * 100).toFixed(2)),
      cpuSecPerPoll: Number((cpuSec / polls).toFixed(3)),
      wallMsPerPoll: typeof lastScan?.durationMs === "number" ? lastScan.durationMs : null,
    },
    notes: [
      `POLL_INTERVAL_MS=${POLL_MS}; CPU per poll = idle CPU seconds / polls in the window (idle work besides polling is negligible)`,
    ],
  });
});

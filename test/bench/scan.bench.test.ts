import { mkdir, readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { it } from "vitest";
import { cpuSecondsOf, loadNote, machineInfo, makeFiles, syncDisk, writeResult } from "./benchSupport.js";
import { waitFor, type LogLine } from "../support/index.js";
import { Pipeline } from "./pipeline.js";

const FILES = Number(process.env.BENCH_SCAN_FILES ?? 100_000);
const POLL_MS = 5000;
const IDLE_MS = Number(process.env.BENCH_IDLE_MS ?? 60_000);

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? null : s[Math.floor(s.length / 2)]!;
};

/**
 * CPU seconds of a process so far, split by thread: the main (JavaScript)
 * thread, libuv's thread pool, and the rest (V8's platform workers: concurrent
 * and parallel garbage collection, compilation).
 */
async function threadCpuOf(pid: number): Promise<{ main: number; libuv: number; other: number }> {
  const out = { main: 0, libuv: 0, other: 0 };
  for (const tid of await readdir(`/proc/${pid}/task`).catch(() => [])) {
    const [stat, comm] = await Promise.all([
      readFile(`/proc/${pid}/task/${tid}/stat`, "utf8").catch(() => ""),
      readFile(`/proc/${pid}/task/${tid}/comm`, "utf8").catch(() => ""),
    ]);
    if (!stat) continue;
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const sec = (Number(fields[11]) + Number(fields[12])) / 100;
    if (tid === String(pid)) out.main += sec;
    else if (comm.startsWith("libuv-worker")) out.libuv += sec;
    else out.other += sec;
  }
  return out;
}

/**
 * Benchmark 5: 100,000 already-processed files left in place (no ARCHIVE_DIR);
 * the CPU and wall time of one poll (from the consumer's "scan done" debug
 * line: files, durationMs, cpuMs), and the consumer's idle CPU over 60 s.
 */
it(`scan cost: ${FILES} resident files, leave-in-place`, async () => {
  await using pipe = await Pipeline.start({
    consumerEnv: {
      ARCHIVE_DIR: "",
      ERROR_DIR: "",
      POLL_INTERVAL_MS: String(POLL_MS),
      STABILITY_MS: "200",
      LOG_LEVEL: "debug",
    },
  });
  await pipe.warmUp();
  const tree = join(pipe.staging, "tree");
  await mkdir(tree, { recursive: true });
  await makeFiles(tree, FILES, () => 64, 100);
  await syncDisk();
  const relayMs = await pipe.relayTree(tree, FILES, 30 * 60_000);

  // Idle: everything is processed and left in place; the consumer only polls.
  // Adaptive spacing puts full polls max(POLL_INTERVAL_MS, 100 × a poll's CPU)
  // apart, so a fixed 60 s window may hold none (and flatter the idle figure)
  // or one too many. The window therefore runs from the end of one full poll
  // to the end of the first full poll at least IDLE_MS later: whole poll
  // cycles, each poll counted once.
  const isFullPoll = (l: LogLine) =>
    l.msg === "scan done" && l.light === false && typeof l.durationMs === "number" && Number(l.files) >= FILES;
  /** Waits (no earlier than `notBefore`) for a full poll logged after byte `from`; resolves to the log offset after it. */
  const nextFullPoll = async (from: number, notBefore: number, timeoutMs: number) =>
    waitFor(
      async () => {
        if (performance.now() < notBefore) return undefined;
        const { lines, end } = await pipe.consumer.logsFrom(from);
        return lines.some(isFullPoll) ? end : undefined;
      },
      { timeoutMs, intervalMs: 250, message: "a full poll of INPUT_DIR" },
    );
  const start = await nextFullPoll((await pipe.consumer.logsFrom(0)).end, 0, 5 * 60_000);
  const cpu0 = await cpuSecondsOf(pipe.consumer.pid);
  const threads0 = await threadCpuOf(pipe.consumer.pid);
  const t0 = performance.now();
  await nextFullPoll(start, t0 + IDLE_MS, IDLE_MS + 5 * 60_000);
  const cpuSec = (await cpuSecondsOf(pipe.consumer.pid)) - cpu0;
  const threads1 = await threadCpuOf(pipe.consumer.pid);
  const wallSec = (performance.now() - t0) / 1000;
  const threadPercent = (k: keyof typeof threads0) =>
    Number((((threads1[k] - threads0[k]) / wallSec) * 100).toFixed(2));
  const note = loadNote();
  const full = (await pipe.consumer.logsFrom(start)).lines.filter(isFullPoll);
  await writeResult({
    name: "scan",
    takenAt: new Date().toISOString(),
    machine: await machineInfo(),
    metrics: {
      residentFiles: FILES,
      initialRelayFilesPerSec: Math.round(FILES / (relayMs / 1000)),
      idleWindowSec: Number(wallSec.toFixed(1)),
      pollsInWindow: full.length,
      idleCpuPercent: Number(((cpuSec / wallSec) * 100).toFixed(2)),
      idleCpuPercentMainThread: threadPercent("main"),
      idleCpuPercentLibuvPool: threadPercent("libuv"),
      idleCpuPercentOtherThreads: threadPercent("other"),
      pollCpuMsInWindow: full.reduce((sum, l) => sum + Number(l.cpuMs), 0),
      pollCpuMs: median(full.map((l) => Number(l.cpuMs))),
      pollWallMs: median(full.map((l) => Number(l.durationMs))),
    },
    notes: [
      `POLL_INTERVAL_MS=${POLL_MS}; the idle window runs from the end of a full poll to the end of the first full poll ${IDLE_MS / 1000} s or more later (whole poll cycles); poll CPU/wall = median over the full polls in it (the consumer's "scan done" debug line)`,
      "idle CPU by thread: main = JavaScript and its synchronous system calls, libuv = thread pool (readdir, async fs), other = V8 platform workers (concurrent/parallel GC) and the rest",
      note,
    ],
  });
});

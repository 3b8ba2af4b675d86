import { join } from "node:path";
import { it } from "vitest";
import {
  countFiles,
  cpuSecondsOf,
  hasCommand,
  loadNote,
  machineInfo,
  makeFiles,
  removeDir,
  stealMeter,
  syncDisk,
  tempDir,
  timeCommand,
  writeResult,
} from "./benchSupport.js";
import { Pipeline } from "./pipeline.js";

const FILES = Number(process.env.BENCH_SMALL_FILES ?? 10_000);
const SIZE = 4096;
/** Producer counts to run (benchmark 6); BENCH_PRODUCERS=1 runs benchmark 1 alone. */
const PRODUCERS = (process.env.BENCH_PRODUCERS ?? "1,2,4").split(",").map(Number);
/**
 * Files relayed per producer before the timed run (BENCH_WARMUP_FILES; 0: only
 * the one-file warm-up). A fresh Node process runs its per-file code in the
 * interpreter and baseline tiers for its first thousands of files (in `perf`,
 * 4 fresh producers sharing 10,000 files spent most of their time in
 * Builtins_*IC and baseline frames); long-lived services do not, and 4
 * producers would otherwise pay that warm-up four times over a quarter of the
 * files each.
 */
const WARMUP_FILES = Number(process.env.BENCH_WARMUP_FILES ?? 2000);
/** e.g. BENCH_CONCURRENCY=16 sets CONCURRENCY on both services (default: the services' default, 32). */
const extraEnv: Record<string, string> = process.env.BENCH_CONCURRENCY
  ? { CONCURRENCY: process.env.BENCH_CONCURRENCY }
  : {};

/** Benchmark 1 (small files) and 6 (producer scaling): 10,000 × 4 KiB, archive on, fsync on. */
it(`small files: ${FILES} × 4 KiB end to end, next to cp -r and rclone copy`, async () => {
  const scratch = await tempDir("small-ref");
  try {
    const ref = join(scratch, "tree");
    await makeFiles(ref, FILES, () => SIZE, 100);
    await syncDisk();
    const cpMs = await timeCommand("cp", ["-r", ref, join(scratch, "cp-copy")]);
    await syncDisk();
    const rcloneMs = (await hasCommand("rclone"))
      ? await timeCommand("rclone", ["copy", "--transfers", "8", ref, join(scratch, "rclone-copy")])
      : null;
    await removeDir(scratch);
    const cpFilesPerSec = Math.round(FILES / (cpMs / 1000));
    const rcloneFilesPerSec = rcloneMs === null ? null : Math.round(FILES / (rcloneMs / 1000));

    const perProducers: Record<number, number> = {};
    type CpuPerFile = { consumerUsPerFile: number; producerUsPerFile: number; natsServerUsPerFile: number };
    const cpuPerProducers: Record<number, CpuPerFile> = {};
    const notes: string[] = [];
    for (const producers of PRODUCERS) {
      await using pipe = await Pipeline.start({
        producers,
        consumerEnv: { STABILITY_MS: "200", ...extraEnv },
        producerEnv: extraEnv,
      });
      await pipe.warmUp();
      if (WARMUP_FILES > 0) {
        const warm = join(pipe.staging, "warm");
        await makeFiles(warm, WARMUP_FILES * producers, () => SIZE, 100);
        await pipe.relayTree(warm, WARMUP_FILES * producers);
      }
      const tree = join(pipe.staging, "tree");
      await makeFiles(tree, FILES, () => SIZE, 100);
      await syncDisk();
      const pids = [pipe.consumer.pid, ...pipe.producers.map((s) => s.pid), pipe.nats.pid() ?? -1];
      const cpuOf = () => Promise.all(pids.map((pid) => cpuSecondsOf(pid).catch(() => NaN)));
      const cpu0 = await cpuOf();
      const steal = await stealMeter();
      const load = loadNote();
      const ms = await pipe.relayTree(tree, FILES);
      const cpu1 = await cpuOf();
      notes.push(`${producers} producer(s): ${load}; host steal ${await steal()} % of CPU time during the relay`);
      perProducers[producers] = Math.round(FILES / (ms / 1000));
      const n = pids.length;
      const producerCpu = cpu1.slice(1, n - 1).reduce((a, b, i) => a + b - cpu0[i + 1]!, 0);
      cpuPerProducers[producers] = {
        consumerUsPerFile: Math.round(((cpu1[0]! - cpu0[0]!) / FILES) * 1e6),
        producerUsPerFile: Math.round((producerCpu / FILES) * 1e6),
        natsServerUsPerFile: Math.round(((cpu1[n - 1]! - cpu0[n - 1]!) / FILES) * 1e6),
      };
      await pipe.stop();
      if ((await countFiles(pipe.archive)) < FILES) throw new Error("not every source file was archived");
    }
    const filesPerSec = perProducers[PRODUCERS[0]!]!;
    const cpu = cpuPerProducers[PRODUCERS[0]!];
    const totalUs = (c: CpuPerFile | undefined) =>
      c ? c.consumerUsPerFile + c.producerUsPerFile + c.natsServerUsPerFile : null;
    const metrics = {
      files: FILES,
      fileBytes: SIZE,
      producers: PRODUCERS[0]!,
      concurrency: Number(extraEnv.CONCURRENCY ?? 32),
      filerelayFilesPerSec: filesPerSec,
      cpFilesPerSec,
      rcloneFilesPerSec,
      ratioToRclone: rcloneFilesPerSec === null ? null : Number((filesPerSec / rcloneFilesPerSec).toFixed(3)),
      ratioToCp: Number((filesPerSec / cpFilesPerSec).toFixed(3)),
      consumerCpuUsPerFile: cpu?.consumerUsPerFile ?? null,
      producerCpuUsPerFile: cpu?.producerUsPerFile ?? null,
      natsServerCpuUsPerFile: cpu?.natsServerUsPerFile ?? null,
      totalCpuUsPerFile: totalUs(cpu),
    };
    const common = {
      takenAt: new Date().toISOString(),
      machine: await machineInfo(),
    };
    await writeResult({
      name: "small-files",
      ...common,
      metrics,
      notes: [
        "end to end = from the rename of the tree into INPUT_DIR to the ctime of the last output file; includes discovery, STABILITY_MS=200, publish, write with fsync (file + directory), ack, archive",
        "cp -r and rclone copy (--transfers 8) of the same tree, page cache warm; neither fsyncs nor archives",
        `services warmed up by relaying ${WARMUP_FILES} files per producer before the timed run (BENCH_WARMUP_FILES)`,
        ...notes,
      ],
    });
    if (PRODUCERS.length > 1) {
      await writeResult({
        name: "producer-scaling",
        ...common,
        metrics: Object.fromEntries(
          PRODUCERS.flatMap((n) => [
            [`filesPerSec_${n}producers`, perProducers[n] ?? null],
            [`cpuUsPerFile_${n}producers`, totalUs(cpuPerProducers[n])],
            [`producerCpuUsPerFile_${n}producers`, cpuPerProducers[n]?.producerUsPerFile ?? null],
            [`ratioFilesPerSec_${n}to${PRODUCERS[0]}`, Number(((perProducers[n] ?? 0) / filesPerSec).toFixed(2))],
            [
              `ratioCpuPerFile_${n}to${PRODUCERS[0]}`,
              Number(((totalUs(cpuPerProducers[n]) ?? 0) / (totalUs(cpu) ?? 1)).toFixed(2)),
            ],
          ]),
        ),
        notes: [
          `${FILES} × 4 KiB, one consumer; on 2 cores more producers add contention (more processes on the same CPUs), not parallelism`,
          ...notes,
        ],
      });
    }
  } finally {
    await removeDir(scratch);
  }
});

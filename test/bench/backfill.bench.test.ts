import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { createInterface } from "node:readline";
import { mkdir, readFile, readdir, rename, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { it } from "vitest";
import { waitFor } from "../support/index.js";
import {
  countFiles,
  cpuSecondsOf,
  loadNote,
  machineInfo,
  memoryOf,
  percentile,
  stealMeter,
  syncDisk,
  writeResult,
} from "./benchSupport.js";
import { Pipeline } from "./pipeline.js";

const FILES = Number(process.env.BENCH_BACKFILL_FILES ?? 100_000);
const FLAT = process.env.BENCH_BACKFILL_FLAT === "1";
/** BENCH_BACKFILL_LEAVE=1: files left in place (no ARCHIVE_DIR); then the RSS and CPU of a full poll over them. */
const LEAVE = process.env.BENCH_BACKFILL_LEAVE === "1";
/** BENCH_BACKFILL_POLL=0 skips waiting for the full poll after a leave-mode relay (it can be 10 minutes away). */
const MEASURE_POLL = LEAVE && process.env.BENCH_BACKFILL_POLL !== "0";
const DIRS = FLAT ? 0 : Number(process.env.BENCH_BACKFILL_DIRS ?? 100);
/** Files dropped into a quiet subdirectory while the backlog drains, one every DROP_EVERY_MS. */
const QUIET_FILES = 20;
const DROP_AFTER_MS = Number(process.env.BENCH_BACKFILL_DROP_AFTER_MS ?? 30_000);
const DROP_EVERY_MS = 500;
const SHA_SAMPLE = 1000;

/** Deterministic, distinct content per file, so a sample can be checked after the source is deleted. */
const contentOf = (i: number) => `backfill file ${i} ${"x".repeat(i % 61)}\n`;
const nameOf = (i: number) => `f${String(i).padStart(7, "0")}.txt`;
const dirOf = (i: number) => (DIRS > 0 ? `d${String(i % DIRS).padStart(4, "0")}` : "");

async function makeTree(root: string): Promise<void> {
  await mkdir(root, { recursive: true });
  for (let d = 0; d < DIRS; d++) await mkdir(join(root, dirOf(d)));
  const batch = 256;
  for (let i = 0; i < FILES; i += batch) {
    const writes: Promise<void>[] = [];
    for (let j = i; j < Math.min(FILES, i + batch); j++) {
      writes.push(writeFile(join(root, dirOf(j), nameOf(j)), contentOf(j)));
    }
    await Promise.all(writes);
  }
}

/** Regular files in one directory (not recursive): cheap enough to poll. */
async function filesIn(dir: string): Promise<string[]> {
  return (await readdir(dir, { withFileTypes: true }).catch(() => [])).filter((e) => e.isFile()).map((e) => e.name);
}

/**
 * Backfill: FILES tiny files already in INPUT_DIR (in DIRS subdirectories, or
 * flat with BENCH_BACKFILL_FLAT=1) relayed by a consumer and one producer in
 * delete mode, default settings. Measures the consumer's peak RSS (VmHWM),
 * files/s, the time to the first output, and the latency of QUIET_FILES files
 * dropped into a separate quiet subdirectory DROP_AFTER_MS into the backfill.
 * Checks every file landed exactly once: the output count, nothing left in the
 * input, and a sampled SHA-256 comparison.
 */
it(`backfill: ${FILES} files in ${FLAT ? "one flat directory" : `${DIRS} directories`}, ${LEAVE ? "left in place" : "delete mode"}`, async () => {
  await using pipe = await Pipeline.start({
    // Leave mode logs at debug level: a full poll's cost is only in its "scan done" line.
    consumerEnv: LEAVE ? { ARCHIVE_DIR: "", LOG_LEVEL: "debug" } : { DELETE_AFTER_PROCESSING: "true" },
    // The input's layout, so that every output can be found (and counted per directory) by its source path.
    producerEnv: { FILENAME_TEMPLATE: "{{.RelDir}}/{{.Name}}{{.Ext}}" },
  });
  await pipe.warmUp();
  const baseline = await memoryOf(pipe.consumer.pid);
  const batchName = "backfill";
  const tree = join(pipe.staging, batchName);
  const t0make = Date.now();
  await makeTree(tree);
  await syncDisk();
  const makeMs = Date.now() - t0make;
  const quiet = join(pipe.input, "quiet");
  await mkdir(quiet);

  const out = join(pipe.output, batchName);
  const outQuiet = join(pipe.output, "quiet");
  // CPU per file of the three processes (comparable across backlog sizes when files/s is not: see stealMeter).
  const pids = [pipe.consumer.pid, pipe.producers[0]!.pid, pipe.nats.pid() ?? -1];
  const cpuOf = () => Promise.all(pids.map((pid) => cpuSecondsOf(pid).catch(() => NaN)));
  const cpu0 = await cpuOf();
  const steal = await stealMeter();
  const t0 = Date.now();
  await rename(tree, join(pipe.input, batchName));

  // RSS sampled through the run (VmHWM is the kernel's own peak; the samples show the shape).
  let peakRss = 0;
  const samples: { atS: number; rssMB: number }[] = [];
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const m = await memoryOf(pipe.consumer.pid);
      if (m) {
        peakRss = Math.max(peakRss, m.rssMB);
        samples.push({ atS: Math.round((Date.now() - t0) / 1000), rssMB: m.rssMB });
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  })();

  // Time to the first output file: the backfill's start-up.
  const firstOutputMs = await waitFor(
    async () => {
      const dirs = DIRS > 0 ? await readdir(out).catch(() => []) : [""];
      for (const d of dirs) if ((await filesIn(join(out, d))).length > 0) return Date.now() - t0;
      return undefined;
    },
    { timeoutMs: 30 * 60_000, intervalMs: 100, message: "the first output file" },
  );

  // Quiet-directory drops, DROP_AFTER_MS into the backfill.
  const dropLatencies: number[] = [];
  const dropper = (async () => {
    await new Promise((r) => setTimeout(r, Math.max(0, t0 + DROP_AFTER_MS - Date.now())));
    const dropped = new Map<string, number>();
    for (let k = 0; k < QUIET_FILES; k++) {
      const name = `q${k}.txt`;
      await writeFile(join(quiet, name), `quiet ${k}\n`);
      dropped.set(name, Date.now());
      await new Promise((r) => setTimeout(r, DROP_EVERY_MS));
    }
    await waitFor(
      async () => {
        for (const name of await filesIn(outQuiet)) {
          if (!dropped.has(name)) continue;
          const st = await stat(join(outQuiet, name));
          dropLatencies.push(Math.round(st.ctimeMs - dropped.get(name)!));
          dropped.delete(name);
        }
        return dropped.size === 0 || undefined;
      },
      { timeoutMs: 30 * 60_000, intervalMs: 100, message: "the quiet-directory files" },
    );
  })();

  // Completion: counted per directory, slowly (a recursive listing of the output costs the services CPU).
  const countOut = async () => {
    if (DIRS === 0) return (await readdir(out).catch(() => [])).length;
    let n = 0;
    for (const d of await readdir(out).catch(() => [])) n += (await readdir(join(out, d)).catch(() => [])).length;
    return n;
  };
  await waitFor(async () => (await countOut()) >= FILES, {
    timeoutMs: 60 * 60_000,
    // Listing a million outputs costs a core a good half second: not too often.
    intervalMs: Math.max(2000, FILES / 100),
    message: `${FILES} files in the output`,
  });
  const cpu1 = await cpuOf();
  const stealPercent = await steal();
  await dropper;
  const mem = await memoryOf(pipe.consumer.pid);
  sampling = false;
  await sampler;

  // The last output's ctime (its link into place) ends the run.
  let last = 0;
  for (let i = 0; i < FILES; i++) {
    const st = await stat(join(out, dirOf(i), nameOf(i)));
    last = Math.max(last, st.ctimeMs);
  }
  const relayMs = last - t0;
  const outputs = await countOut();
  if (outputs !== FILES) throw new Error(`expected ${FILES} outputs, found ${outputs}`);
  const left = await countFiles(join(pipe.input, batchName));
  if (left !== (LEAVE ? FILES : 0)) throw new Error(`${left} source files left in the input`);
  // Leave mode: the first full poll that starts after the relay, over every resident file.
  let poll: { cpuMs: number; durationMs: number; rssAfterMB: number | null } | undefined;
  if (MEASURE_POLL) {
    // The size, not a read: a million files' debug log is longer than a JavaScript string may be.
    const from = await pipe.consumer.logEnd();
    const line = await waitFor(
      async () =>
        (await pipe.consumer.logsFrom(from)).lines.find(
          (l) => l.msg === "scan done" && l.light === false && Number(l.files) >= FILES,
        ),
      { timeoutMs: 20 * 60_000, intervalMs: 1000, message: "a full poll over the resident files" },
    );
    poll = {
      cpuMs: Number(line.cpuMs),
      durationMs: Number(line.durationMs),
      rssAfterMB: (await memoryOf(pipe.consumer.pid))?.rssMB ?? null,
    };
  }
  const memAfter = await memoryOf(pipe.consumer.pid);
  for (let s = 0; s < SHA_SAMPLE; s++) {
    const i = Math.floor((s * FILES) / SHA_SAMPLE);
    const got = createHash("sha256")
      .update(await readFile(join(out, dirOf(i), nameOf(i))))
      .digest("hex");
    const want = createHash("sha256").update(contentOf(i)).digest("hex");
    if (got !== want) throw new Error(`${dirOf(i)}/${nameOf(i)}: SHA-256 mismatch`);
  }
  // Each file published once: one "file published" line per file (a republish would log another).
  let published = 0;
  // Line by line: the log of a million files can pass the longest string JavaScript allows.
  for await (const line of createInterface({ input: createReadStream(pipe.consumer.logFile), crlfDelay: Infinity })) {
    if (line.includes('"msg":"file published"')) published++;
  }
  const expectedPublished = FILES + QUIET_FILES + 1; // + the warm-up file
  if (published !== expectedPublished) throw new Error(`${published} publishes logged, expected ${expectedPublished}`);
  const lat = [...dropLatencies].sort((a, b) => a - b);
  const label = `${FILES}${FLAT ? "-flat" : `-${DIRS}dirs`}${LEAVE ? "-leave" : ""}`;
  await writeResult({
    name: `backfill-${label}`,
    takenAt: new Date().toISOString(),
    machine: await machineInfo(),
    metrics: {
      files: FILES,
      dirs: DIRS,
      treeCreateMs: makeMs,
      relayMs: Math.round(relayMs),
      filesPerSec: Math.round(FILES / (relayMs / 1000)),
      consumerCpuUsPerFile: Math.round(((cpu1[0]! - cpu0[0]!) / FILES) * 1e6),
      producerCpuUsPerFile: Math.round(((cpu1[1]! - cpu0[1]!) / FILES) * 1e6),
      natsServerCpuUsPerFile: Math.round(((cpu1[2]! - cpu0[2]!) / FILES) * 1e6),
      hostStealPercent: stealPercent,
      firstOutputMs,
      consumerBaselineRssMB: baseline?.rssMB ?? null,
      consumerPeakRssMB: mem?.peakMB ?? null,
      consumerSampledPeakRssMB: peakRss,
      consumerEndRssMB: mem?.rssMB ?? null,
      consumerPeakRssAfterChecksMB: memAfter?.peakMB ?? null,
      ...(poll
        ? { fullPollCpuMs: poll.cpuMs, fullPollDurationMs: poll.durationMs, rssAfterPollMB: poll.rssAfterMB }
        : {}),
      quietFiles: lat.length,
      quietLatencyP50Ms: percentile(lat, 50),
      quietLatencyP99Ms: percentile(lat, 99),
      quietLatencyMaxMs: lat[lat.length - 1] ?? null,
    },
    notes: [
      `consumer + 1 producer, ${LEAVE ? "files left in place (LOG_LEVEL=debug)" : "DELETE_AFTER_PROCESSING=true"}, defaults otherwise (STABILITY_MS 2000, CONCURRENCY 32)`,
      `quiet files: ${QUIET_FILES} dropped ${DROP_EVERY_MS} ms apart from ${DROP_AFTER_MS / 1000} s into the backfill; latency to the output's ctime`,
      `exactly once: ${FILES} outputs, ${LEAVE ? "all left" : "none left"} in the input, one publish logged per file, SHA-256 of ${SHA_SAMPLE} sampled outputs`,
      `RSS samples (s:MB): ${samples
        .filter((_, k) => k % Math.max(1, Math.floor(samples.length / 30)) === 0)
        .map((x) => `${x.atS}:${x.rssMB}`)
        .join(" ")}`,
      loadNote(),
    ],
  });
});

import { execFile } from "node:child_process";
import { createWriteStream } from "node:fs";
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { cpus, loadavg, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";

const run = promisify(execFile);

/** Where bench JSON goes (one file per benchmark, overwritten each run). */
export const RESULTS_DIR = new URL("../../bench-results/", import.meta.url);

export interface BenchResult {
  name: string;
  takenAt: string;
  machine: {
    cpus: number;
    cpuModel: string;
    memGiB: number;
    node: string;
    natsServer: string;
    /** CPU ms of calibrationCpuMs()'s fixed workload when the result was written. */
    calibrationCpuMs: number;
  };
  metrics: Record<string, number | string | null>;
  notes?: string[];
}

/**
 * CPU milliseconds of a fixed workload (SHA-256 of 64 MiB, 200,000 small
 * JSON.stringify calls): how fast this (virtual) CPU is right now. On a shared
 * host the same work took 117–211 ms within one hour (2026-12-01), and CPU
 * per file moved with it; results are comparable only next to this figure.
 */
export function calibrationCpuMs(): number {
  const before = process.cpuUsage();
  const block = Buffer.alloc(1024 * 1024, 7);
  let sink = 0;
  for (let i = 0; i < 64; i++) sink += createHash("sha256").update(block).digest()[0]!;
  for (let i = 0; i < 200_000; i++) sink += JSON.stringify({ i, s: "x".repeat(i % 50) }).length;
  const used = process.cpuUsage(before);
  void sink; // used, so the work is not optimized away
  return Math.round((used.user + used.system) / 1000);
}

export async function machineInfo(): Promise<BenchResult["machine"]> {
  let natsServer = "unknown";
  try {
    const { stdout } = await run("nats-server", ["--version"]);
    natsServer = stdout.trim();
  } catch {
    try {
      natsServer = (await run("/usr/sbin/nats-server", ["--version"])).stdout.trim();
    } catch {
      /* leave unknown */
    }
  }
  return {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? "unknown",
    memGiB: Math.round(totalmem() / 1024 ** 3),
    node: process.version,
    natsServer,
    calibrationCpuMs: calibrationCpuMs(),
  };
}

export async function writeResult(result: BenchResult): Promise<void> {
  await mkdir(RESULTS_DIR, { recursive: true });
  await writeFile(new URL(`${result.name}.json`, RESULTS_DIR), JSON.stringify(result, null, 2) + "\n");
  const rows = Object.entries(result.metrics).map(([k, v]) => ({ metric: k, value: v }));
  console.log(`\n== ${result.name} ==`);
  console.table(rows);
  for (const n of result.notes ?? []) console.log(`note: ${n}`);
}

let benchRoot: Promise<string> | undefined;

/**
 * The directory every benchmark works in: BENCH_DIR, else
 * <tmpdir>/filerelay-bench, marked with ext4's "top of a directory hierarchy"
 * flag (chattr +T) where that works. Why: ext4 puts a new subdirectory's
 * inodes in its parent's block group, and after a run has created and deleted
 * tens of thousands of files there, creating and unlinking files in that group
 * cost ~25× the system time (measured: 5,000 create/write/close/lstat/unlink
 * took 3.8 s of CPU in a churned tree, 0.16 s in a fresh one), so every run
 * slowed the next: small files fell from ~2,100 to ~800 files/s within an
 * hour. With +T each run's directories start in a fresh block group.
 */
export function benchDir(): Promise<string> {
  benchRoot ??= (async () => {
    const root = process.env.BENCH_DIR ?? join(tmpdir(), "filerelay-bench");
    await mkdir(root, { recursive: true });
    await run("chattr", ["+T", root]).catch(() => undefined); // not ext4, or not permitted: run as is
    return root;
  })();
  return benchRoot;
}

export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(await benchDir(), `${prefix}-`));
}

/** Writes `count` files of `size` random bytes into `dir` (flat or in `fanout` subdirectories). */
export async function makeFiles(
  dir: string,
  count: number,
  sizeOf: (i: number) => number,
  fanout = 0,
): Promise<number> {
  let total = 0;
  const pool = randomBytes(8 * 1024 * 1024);
  for (let i = 0; i < count; i++) {
    const sub = fanout > 0 ? join(dir, `d${i % fanout}`) : dir;
    if (fanout > 0 && i < fanout) await mkdir(sub, { recursive: true });
    const size = sizeOf(i);
    total += size;
    const path = join(sub, `f${String(i).padStart(6, "0")}.bin`);
    if (size <= pool.length) {
      // Distinct content per file: prefix with the index so no two files are equal.
      const head = Buffer.from(`${i}:${Date.now()}:`);
      const off = (i * 7919) % Math.max(1, pool.length - size);
      await writeFile(
        path,
        Buffer.concat([head, pool.subarray(off, off + Math.max(0, size - head.length))]).subarray(0, size),
      );
    } else {
      await writeLarge(path, size);
    }
  }
  return total;
}

/** Streams `size` random bytes to `path` without holding them in memory. */
export async function writeLarge(path: string, size: number): Promise<void> {
  const out = createWriteStream(path);
  const chunk = 4 * 1024 * 1024;
  for (let written = 0; written < size;) {
    const n = Math.min(chunk, size - written);
    if (!out.write(randomBytes(n))) await once(out, "drain");
    written += n;
  }
  out.end();
  await once(out, "finish");
}

/** Counts regular files below `dir` (recursive). */
export async function countFiles(dir: string): Promise<number> {
  try {
    const entries = await readdir(dir, { recursive: true, withFileTypes: true });
    return entries.filter((e) => e.isFile() && !e.name.startsWith(".")).length;
  } catch {
    return 0;
  }
}

/** Wall time of a shell command in ms. */
export async function timeCommand(cmd: string, args: string[]): Promise<number> {
  const t0 = performance.now();
  await run(cmd, args, { maxBuffer: 16 * 1024 * 1024 });
  return performance.now() - t0;
}

export async function hasCommand(cmd: string): Promise<boolean> {
  try {
    await run("sh", ["-c", `command -v ${cmd}`]);
    return true;
  } catch {
    return false;
  }
}

/** Peak resident set (VmHWM) and current RSS of a process, in MB. */
export async function memoryOf(pid: number): Promise<{ peakMB: number; rssMB: number } | undefined> {
  try {
    const status = await readFile(`/proc/${pid}/status`, "utf8");
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN);
    return { peakMB: Math.round(kb("VmHWM") / 1024), rssMB: Math.round(kb("VmRSS") / 1024) };
  } catch {
    return undefined;
  }
}

/** User+system CPU seconds consumed so far by a process (from /proc/<pid>/stat). */
export async function cpuSecondsOf(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]);
  return ticks / 100; // CLK_TCK is 100 on Linux
}

/** Flushes dirty pages (e.g. a freshly generated tree) so their writeback does not land inside a timed window. */
export async function syncDisk(): Promise<void> {
  await run("sync", []);
}

/** Load average over the last minute, and the CPU count: benchmark numbers on a shared machine need it. */
export function loadNote(): string {
  return `1-min load average ${loadavg()[0]!.toFixed(2)} on ${cpus().length} CPUs when measured`;
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx]!;
}

/**
 * The share of CPU time the hypervisor gave to other guests ("steal" in
 * /proc/stat) since `since` (a value this function returned): on this shared
 * host it ranged from 0 to over 35 % within a run, and files/s moves with it
 * while CPU per file does not. Call with no argument to start a window.
 */
export async function stealMeter(): Promise<() => Promise<number>> {
  const read = async () => {
    const cpu = (await readFile("/proc/stat", "utf8")).split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
    return { steal: cpu[7] ?? 0, total: cpu.reduce((a, b) => a + b, 0) };
  };
  const start = await read();
  return async () => {
    const now = await read();
    const total = now.total - start.total;
    return total > 0 ? Number(((100 * (now.steal - start.steal)) / total).toFixed(1)) : 0;
  };
}

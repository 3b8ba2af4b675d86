import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { lstat, mkdir, open, readdir, rename, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  guardChild,
  repoRoot,
  serviceEntry,
  startNats,
  waitFor,
  waitForExit,
  type LogLine,
  type NatsServer,
  type ServiceName,
} from "../support/index.js";
import { countFiles, removeDir, tempDir } from "./benchSupport.js";

export interface PipelineOptions {
  producers?: number;
  consumerEnv?: Record<string, string>;
  producerEnv?: Record<string, string>;
}

/**
 * A service process for benchmarks. Unlike test/support's startService, its
 * stdout goes to a file, not through a pipe into the benchmark process: parsing
 * tens of thousands of JSON log lines would cost the benchmark CPU that the
 * services (on a 2-core machine) need. Logs are read from the file on demand.
 *
 * BENCH_CPU_PROF=<dir> runs every service with `node --cpu-prof` into <dir>
 * (profiles are written when the service exits after SIGTERM).
 * BENCH_PERF_MAP=1 runs them with `--perf-basic-prof`, so that Linux `perf`
 * (which, unlike --cpu-prof on a loaded 2-CPU host, samples only on-CPU time)
 * can name JavaScript frames. BENCH_NODE_ARGS adds node/V8 options to every
 * service (space-separated, e.g. "--single-threaded-gc").
 */
export class BenchService {
  readonly proc: ChildProcess;
  readonly pid: number;
  readonly logFile: string;

  constructor(
    readonly name: ServiceName,
    env: Record<string, string>,
    logFile: string,
  ) {
    this.logFile = logFile;
    const fd = openSync(logFile, "a");
    const nodeArgs: string[] = [];
    const profDir = process.env.BENCH_CPU_PROF;
    if (profDir)
      nodeArgs.push("--cpu-prof", `--cpu-prof-dir=${profDir}`, `--cpu-prof-name=${name}-${Date.now()}.cpuprofile`);
    // (V8 would also write an isolate-*.log per process into the working directory: sent nowhere.)
    if (process.env.BENCH_PERF_MAP === "1")
      nodeArgs.push("--perf-basic-prof", "--logfile=/dev/null", "--no-logfile-per-isolate");
    for (const arg of (process.env.BENCH_NODE_ARGS ?? "").split(" ")) if (arg !== "") nodeArgs.push(arg);
    this.proc = spawn(process.execPath, [...nodeArgs, serviceEntry(name)], {
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", HTTP_PORT: "0", ...env },
      cwd: repoRoot,
      stdio: ["ignore", fd, fd],
    });
    closeSync(fd);
    guardChild(this.proc);
    this.pid = this.proc.pid ?? -1;
  }

  /** Parsed JSON log lines written so far. */
  async logs(): Promise<LogLine[]> {
    return (await this.logsFrom(0)).lines;
  }

  /** The log's current size in bytes: a `logsFrom()` start that skips what is there (without reading it). */
  async logEnd(): Promise<number> {
    return (await stat(this.logFile).catch(() => ({ size: 0 }))).size;
  }

  /** Parsed log lines from byte `from` on, and the byte offset they end at (the next call's `from`). */
  async logsFrom(from: number): Promise<{ lines: LogLine[]; end: number }> {
    let text = "";
    let end = from;
    const fh = await open(this.logFile).catch(() => undefined);
    if (fh) {
      try {
        const size = (await fh.stat()).size;
        const buf = Buffer.alloc(Math.max(0, size - from));
        const { bytesRead } = await fh.read(buf, 0, buf.length, from);
        // Only whole lines: a line still being written is read by the next call.
        const last = buf.subarray(0, bytesRead).lastIndexOf(0x0a);
        text = buf.subarray(0, last + 1).toString("utf8");
        end = from + last + 1;
      } finally {
        await fh.close();
      }
    }
    const lines: LogLine[] = [];
    for (const line of text.split("\n")) {
      if (!line.trim()) continue;
      try {
        lines.push(JSON.parse(line) as LogLine);
      } catch {
        lines.push({ msg: line, level: "raw" });
      }
    }
    return { lines, end };
  }

  async waitForLog(pred: (l: LogLine) => boolean, what: string, timeoutMs = 60_000): Promise<LogLine> {
    return waitFor(
      async () => {
        const found = (await this.logs()).find(pred);
        if (!found && this.proc.exitCode !== null) {
          throw new Error(`${this.name} exited with ${this.proc.exitCode}; see ${this.logFile}`);
        }
        return found;
      },
      { timeoutMs, intervalMs: 100, message: `${this.name}: ${what}` },
    );
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill("SIGTERM");
    await waitForExit(this.proc, 60_000).catch(() => this.proc.kill("SIGKILL"));
  }
}

/**
 * A fresh nats-server, one consumer and N producers as real processes, with
 * their own directories. `start()` resolves once every service said it is
 * running; `warmUp()` relays one file so both sides are connected and
 * provisioned before anything is timed.
 */
export class Pipeline implements AsyncDisposable {
  nats!: NatsServer;
  consumer!: BenchService;
  producers: BenchService[] = [];
  root!: string;
  input!: string;
  output!: string;
  archive!: string;
  errors!: string;
  staging!: string;
  logs!: string;

  static async start(options: PipelineOptions = {}): Promise<Pipeline> {
    const p = new Pipeline();
    p.root = await tempDir("pipe");
    p.input = join(p.root, "input");
    p.output = join(p.root, "output");
    p.archive = join(p.root, "archive");
    p.errors = join(p.root, "error");
    p.staging = join(p.root, "staging");
    p.logs = join(p.root, "logs");
    for (const d of [p.input, p.output, p.archive, p.errors, p.staging, p.logs]) await mkdir(d, { recursive: true });
    try {
      p.nats = await startNats();
      const common = { NATS_URL: p.nats.url, LOG_LEVEL: "info", HTTP_PORT: "0" };
      // The consumer first: it provisions the stream and the producer group.
      p.consumer = new BenchService(
        "consumer",
        {
          ...common,
          INPUT_DIR: p.input,
          ARCHIVE_DIR: p.archive,
          ERROR_DIR: p.errors,
          SOURCE: "bench",
          ...options.consumerEnv,
        },
        join(p.logs, "consumer.log"),
      );
      await p.consumer.waitForLog((l) => l.msg === "consumer started", "consumer started");
      for (let i = 0; i < (options.producers ?? 1); i++) {
        p.producers.push(
          new BenchService(
            "producer",
            { ...common, OUTPUT_DIR: p.output, ORGANIZE_BY: "none", ...options.producerEnv },
            join(p.logs, `producer-${i}.log`),
          ),
        );
      }
      await Promise.all(p.producers.map((s) => s.waitForLog((l) => l.msg === "consuming files", "consuming files")));
    } catch (err) {
      await p[Symbol.asyncDispose]();
      throw err;
    }
    return p;
  }

  async warmUp(): Promise<void> {
    await writeFile(join(this.input, "warmup.txt"), "warm up\n");
    await waitFor(async () => (await countFiles(this.output)) >= 1, {
      timeoutMs: 60_000,
      message: "the warm-up file to be relayed",
    });
  }

  /**
   * Moves a prepared tree into INPUT_DIR in one rename and waits until
   * `expected` more outputs exist. Returns the milliseconds from the rename to
   * the moment the last output became visible (its ctime: the link into place),
   * so the benchmark can poll the output slowly without costing the services CPU.
   */
  async relayTree(tree: string, expected: number, timeoutMs = 30 * 60_000): Promise<number> {
    const before = new Set(await listOutput(this.output));
    const t0 = Date.now();
    await rename(tree, join(this.input, `batch-${t0}`));
    const intervalMs = expected > 1000 ? 250 : 20;
    await waitFor(async () => (await countFiles(this.output)) - before.size >= expected, {
      timeoutMs,
      intervalMs,
      message: `${expected} files in the output`,
    });
    let last = 0;
    for (const rel of await listOutput(this.output)) {
      if (before.has(rel)) continue;
      const st = await lstat(join(this.output, rel));
      last = Math.max(last, st.ctimeMs);
    }
    return last - t0;
  }

  /** Stops every service (SIGTERM: profiles are written), then the broker. */
  async stop(): Promise<void> {
    await this.consumer?.stop().catch(() => undefined);
    await Promise.all(this.producers.map((s) => s.stop().catch(() => undefined)));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
    await this.nats?.[Symbol.asyncDispose]();
    if (process.env.BENCH_KEEP) console.log(`kept ${this.root}`);
    else await removeDir(this.root);
  }
}

/** Relative paths of the regular, non-hidden files below `dir`. */
async function listOutput(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries
    .filter((e) => e.isFile() && !e.name.startsWith("."))
    .map((e) => join(e.parentPath, e.name).slice(dir.length + 1));
}

import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { it } from "vitest";
import { guardChild, repoRoot, startNats, waitFor, waitForExit, type LogLine } from "../support/index.js";
import { cpuSecondsOf, loadNote, machineInfo, memoryOf, removeDir, tempDir, writeResult } from "./benchSupport.js";

/** Events in the throughput run (1 KiB each). */
const EVENTS = Number(process.env.BENCH_BATCHER_EVENTS ?? 200_000);
/** Event bytes held in one long window for the memory run (default 100 MB; up to 500 MB). */
const WINDOW_BYTES = Number(process.env.BENCH_BATCHER_WINDOW_BYTES ?? 100 * 1000 ** 2);
const EVENT_BYTES = 1024;
/** PubAcks awaited at once by the event publisher: as fast as the broker accepts. */
const IN_FLIGHT = 1024;

const batcherEntry = fileURLToPath(new URL("../../packages/batcher/dist/main.js", import.meta.url));

/** The batcher as a process logging to a file (parsing its lines through a pipe would cost the run CPU). */
class BatcherProcess {
  readonly proc: ChildProcess;
  readonly pid: number;

  constructor(
    env: Record<string, string>,
    readonly logFile: string,
  ) {
    const fd = openSync(logFile, "a");
    this.proc = spawn(process.execPath, [batcherEntry], {
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", HTTP_PORT: "0", ...env },
      cwd: repoRoot,
      stdio: ["ignore", fd, fd],
    });
    closeSync(fd);
    guardChild(this.proc);
    this.pid = this.proc.pid ?? -1;
  }

  async logs(): Promise<LogLine[]> {
    const text = await readFile(this.logFile, "utf8").catch(() => "");
    const lines: LogLine[] = [];
    for (const line of text.split("\n")) {
      if (!line.trim()) continue;
      try {
        lines.push(JSON.parse(line) as LogLine);
      } catch {
        /* a line still being written */
      }
    }
    return lines;
  }

  async published(): Promise<LogLine[]> {
    return (await this.logs()).filter((l) => l.msg === "batch published");
  }

  async waitForLog(pred: (l: LogLine) => boolean, what: string, timeoutMs = 120_000): Promise<LogLine> {
    return waitFor(
      async () => {
        const found = (await this.logs()).find(pred);
        if (!found && this.proc.exitCode !== null) throw new Error(`batcher exited; see ${this.logFile}`);
        return found;
      },
      { timeoutMs, intervalMs: 250, message: `batcher: ${what}` },
    );
  }

  async stop(timeoutMs = 60_000): Promise<number | null> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return this.proc.exitCode;
    this.proc.kill("SIGTERM");
    return waitForExit(this.proc, timeoutMs).catch(() => {
      this.proc.kill("SIGKILL");
      return null;
    });
  }
}

/** 1 KiB XML events, each its own document (the batcher's default format), numbered. */
function xmlEvent(i: number): Buffer {
  const head = `<?xml version="1.0" encoding="UTF-8"?>\n<event id="${i}" type="bench"><data>`;
  const tail = `</data></event>`;
  return Buffer.from(head + "x".repeat(EVENT_BYTES - head.length - tail.length) + tail);
}

/** Publishes `count` events with `IN_FLIGHT` PubAcks outstanding; resolves with the wall ms it took. */
async function publishEvents(url: string, count: number, firstId = 0): Promise<number> {
  const nc = await connect({ servers: url, noAsyncTraces: true });
  try {
    const js = jetstream(nc, { timeout: 60_000 });
    const t0 = performance.now();
    let next = 0;
    const worker = async () => {
      while (next < count) {
        const i = next++;
        await js.publish(`events.bench.${i % 8}`, xmlEvent(firstId + i));
      }
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
    return performance.now() - t0;
  } finally {
    await nc.close();
  }
}

const sum = (lines: LogLine[], key: string) => lines.reduce((n, l) => n + Number(l[key] ?? 0), 0);

it(`batcher: ${EVENTS} × 1 KiB events into batches; peak RSS holding ${(WINDOW_BYTES / 1e6).toFixed(0)} MB in one window`, async () => {
  const metrics: Record<string, number | string | null> = {};
  const notes: string[] = [];
  const root = await tempDir("batcher");
  try {
    // --- throughput: events published as fast as the broker takes them, batched as they come ---
    {
      await using nats = await startNats();
      const batcher = new BatcherProcess(
        {
          NATS_URL: nats.url,
          LOG_LEVEL: "info",
          BATCH_SPOOL_DIR: join(root, "spool-rate"),
          // Size rotation (MAX_BATCH_BYTES, default 5 MiB) makes most batches; a short interval closes the tail.
          ROTATION_INTERVAL_MS: "1000",
          ROTATION_CHECK_MS: "100",
        },
        join(root, "batcher-rate.log"),
      );
      try {
        await batcher.waitForLog((l) => l.msg === "batcher started", "started");
        const cpu0 = await cpuSecondsOf(batcher.pid);
        const natsCpu0 = await cpuSecondsOf(nats.pid() ?? -1);
        const client0 = process.cpuUsage();
        const t0 = Date.now();
        const publishMs = await publishEvents(nats.url, EVENTS);
        const client = process.cpuUsage(client0);
        const published = await waitFor(
          async () => {
            const p = await batcher.published();
            return sum(p, "events") >= EVENTS ? p : undefined;
          },
          { timeoutMs: 30 * 60_000, intervalMs: 250, message: `all ${EVENTS} events in published batches` },
        );
        const lastAt = Math.max(...published.map((l) => Date.parse(String(l.time))));
        const secs = (lastAt - t0) / 1000;
        metrics.events = EVENTS;
        metrics.eventBytes = EVENT_BYTES;
        metrics.publishedEventsPerSec = Math.round(EVENTS / (publishMs / 1000));
        metrics.batchedEventsPerSec = Math.round(EVENTS / secs);
        metrics.batchedMBps = Number(((EVENTS * EVENT_BYTES) / 1e6 / secs).toFixed(1));
        metrics.batches = published.length;
        metrics.sizeBatches = published.filter((l) => l.reason === "size").length;
        const batcherCpu = (await cpuSecondsOf(batcher.pid)) - cpu0;
        metrics.batcherCpuSec = Number(batcherCpu.toFixed(1));
        metrics.batcherCpuUsPerEvent = Math.round((batcherCpu * 1e6) / EVENTS);
        metrics.natsCpuSec = Number(((await cpuSecondsOf(nats.pid() ?? -1)) - natsCpu0).toFixed(1));
        metrics.publisherCpuSec = Number(((client.user + client.system) / 1e6).toFixed(1));
        metrics.ratePeakRssMB = (await memoryOf(batcher.pid))?.peakMB ?? null;
        notes.push(
          `throughput: ${EVENTS} XML events of ${EVENT_BYTES} B on events.bench.<0-7>, js.publish() with ${IN_FLIGHT} PubAcks outstanding from the runner while the batcher (default BATCH_FORMAT=xml, MAX_BATCH_BYTES 5 MiB, ROTATION_INTERVAL_MS 1000) consumes; batched = from the first publish to the last batch's "batch published" log line; batches > INLINE_MAX_BYTES go through the Object Store; no sink running`,
          `throughput run: ${loadNote()}`,
        );
      } finally {
        await batcher.stop();
      }
    }

    // --- memory: one long window holding WINDOW_BYTES of events, published as one batch on SIGTERM ---
    {
      await using nats = await startNats();
      const batcher = new BatcherProcess(
        {
          NATS_URL: nats.url,
          LOG_LEVEL: "info",
          BATCH_SPOOL_DIR: join(root, "spool-window"),
          ROTATION_INTERVAL_MS: "300000",
          MAX_BATCH_BYTES: "500MB",
          SHUTDOWN_TIMEOUT_MS: "600000",
        },
        join(root, "batcher-window.log"),
      );
      let peakMB = 0;
      const sampler = setInterval(() => {
        void memoryOf(batcher.pid).then((m) => {
          if (m && Number.isFinite(m.peakMB)) peakMB = Math.max(peakMB, m.peakMB);
        });
      }, 100);
      try {
        await batcher.waitForLog((l) => l.msg === "batcher started", "started");
        const idleMB = (await memoryOf(batcher.pid))?.rssMB ?? null;
        const count = Math.ceil(WINDOW_BYTES / EVENT_BYTES);
        await publishEvents(nats.url, count);
        // Every event is in the open window before it is closed.
        const probe = await connect({ servers: nats.url });
        try {
          const jsm = await jetstreamManager(probe);
          await waitFor(
            async () => {
              const info = await jsm.consumers.info("EVENTS", "batcher");
              return info.num_pending === 0 && info.num_ack_pending === count;
            },
            { timeoutMs: 10 * 60_000, intervalMs: 500, message: "every event delivered into the window" },
          );
        } finally {
          await probe.close();
        }
        const heldMB = (await memoryOf(batcher.pid))?.rssMB ?? null;
        const t0 = Date.now();
        batcher.proc.kill("SIGTERM");
        const line = await batcher.waitForLog((l) => l.msg === "batch published", "the window published", 10 * 60_000);
        await waitForExit(batcher.proc, 10 * 60_000);
        metrics.windowEvents = count;
        metrics.windowEventMB = Number(((count * EVENT_BYTES) / 1e6).toFixed(1));
        metrics.windowBatchFileMB = Number((Number(line.size) / 1e6).toFixed(1));
        metrics.idleRssMB = idleMB;
        metrics.windowHeldRssMB = heldMB;
        metrics.windowPeakRssMB = peakMB;
        metrics.windowPublishSec = Number(((Number(line.durationMs) || Date.now() - t0) / 1000).toFixed(1));
        notes.push(
          `memory: ${count} events of ${EVENT_BYTES} B in one window (ROTATION_INTERVAL_MS 300000, MAX_BATCH_BYTES 500MB), closed by SIGTERM and published as one batch through the Object Store; peak = the batcher's VmHWM sampled every 100 ms up to its exit; held = VmRSS with the whole window delivered (spooled to disk; in memory per event only its ack subject and sequence)`,
          `memory run: ${loadNote()}`,
        );
      } finally {
        clearInterval(sampler);
        await batcher.stop();
      }
    }
  } finally {
    if (process.env.BENCH_KEEP !== "1") await removeDir(root);
  }
  await writeResult({
    name: "batcher",
    takenAt: new Date().toISOString(),
    machine: await machineInfo(),
    metrics,
    notes,
  });
});

import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { it } from "vitest";
import {
  cpuSecondsOf,
  loadNote,
  machineInfo,
  memoryOf,
  syncDisk,
  timeCommand,
  writeLarge,
  writeResult,
} from "./benchSupport.js";
import { Pipeline } from "./pipeline.js";
import { rawOrderedRead, rawPut } from "./rawRoundTrip.js";

const SIZE = Number(process.env.BENCH_LARGE_BYTES ?? 1024 ** 3);
/** PAYLOAD_CHUNK_BYTES for the consumer (unset: its default). */
const CHUNK = process.env.BENCH_PAYLOAD_CHUNK_BYTES;
/** The raw round trip's chunk: the consumer's PAYLOAD_CHUNK_BYTES (default 1 MiB). */
const RAW_CHUNK = Number(CHUNK ?? 1024 * 1024);
/**
 * Raw round trips per run; the median is the yardstick. One alone varied by
 * ±20 % between runs minutes apart on this host (213–303 MB/s), more than
 * anything measured against it.
 */
const RAW_RUNS = 3;

/**
 * The broker's raw round trip on the pipeline's own nats-server: SIZE bytes
 * published as chunks into a file-storage stream (32 MiB of PubAcks
 * outstanding) and read back with an ordered consumer, from this process; no
 * hashing, no files. Wall time of put + read, CPU of this process and the
 * server.
 */
async function rawRoundTrip(
  url: string,
  serverPid: number,
): Promise<{ ms: number; clientCpuSec: number; serverCpuSec: number }> {
  const nc = await connect({ servers: url, noAsyncTraces: true });
  try {
    const pool = randomBytes(64 * 1024 * 1024);
    const stream = "RAWRT";
    const server0 = await cpuSecondsOf(serverPid);
    const client0 = process.cpuUsage();
    const t0 = performance.now();
    await rawPut(nc, { stream, pool, total: SIZE, chunk: RAW_CHUNK, windowBytes: 32 * 1024 * 1024 });
    const got = await rawOrderedRead(nc, stream, Math.ceil(SIZE / RAW_CHUNK));
    const ms = performance.now() - t0;
    const client = process.cpuUsage(client0);
    const serverCpuSec = (await cpuSecondsOf(serverPid)) - server0;
    if (got !== SIZE) throw new Error(`raw read back ${got} bytes, expected ${SIZE}`);
    await (await jetstreamManager(nc)).streams.delete(stream);
    return { ms, clientCpuSec: (client.user + client.system) / 1e6, serverCpuSec };
  } finally {
    await nc.close();
  }
}

async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest("hex");
}

/**
 * Benchmark 3 (large file), and `pnpm bench:large` (BENCH_LARGE_BYTES=4 GiB)
 * for the flat-memory proof of issue 5: one file of random bytes, copied by
 * `cp` and relayed end to end in the same run; peak RSS (VmHWM) per service.
 */
it(`large file: ${(SIZE / 1024 ** 2).toFixed(0)} MiB end to end, next to cp`, async () => {
  await using pipe = await Pipeline.start({
    consumerEnv: { STABILITY_MS: "200", ...(CHUNK ? { PAYLOAD_CHUNK_BYTES: CHUNK } : {}) },
    ...(process.env.BENCH_PRODUCER_ENV
      ? { producerEnv: JSON.parse(process.env.BENCH_PRODUCER_ENV) as Record<string, string> }
      : {}),
  });
  await pipe.warmUp();
  const tree = join(pipe.staging, "tree");
  await mkdir(tree, { recursive: true });
  const src = join(tree, "big.bin");
  await writeLarge(src, SIZE);
  const expected = await sha256File(src);
  await syncDisk();

  // The same file copied by cp (page cache, no fsync), and by cp followed by sync (durable, like filerelay).
  const copy = join(pipe.staging, "big-copy.bin");
  const cpMs = await timeCommand("cp", [src, copy]);
  await rm(copy);
  await syncDisk();
  const cpSyncMs = await timeCommand("sh", ["-c", `cp '${src}' '${copy}' && sync '${copy}'`]);
  await rm(copy);
  await syncDisk();
  // The broker's raw round trip, same server, same run: the yardstick for a relay through it.
  const raws: Awaited<ReturnType<typeof rawRoundTrip>>[] = [];
  for (let i = 0; i < RAW_RUNS; i++) {
    raws.push(await rawRoundTrip(pipe.nats.url, pipe.nats.pid() ?? -1));
    await syncDisk();
  }
  raws.sort((a, b) => a.ms - b.ms);
  const raw = raws[Math.floor(raws.length / 2)]!;

  const pids = [pipe.consumer.pid, pipe.producers[0]!.pid, pipe.nats.pid() ?? -1];
  const cpuOf = () => Promise.all(pids.map((pid) => cpuSecondsOf(pid).catch(() => NaN)));
  const cpu0 = await cpuOf();
  const note = loadNote();
  const ms = await pipe.relayTree(tree, 1, 60 * 60_000);
  const cpu1 = await cpuOf();
  const consumerMem = await memoryOf(pipe.consumer.pid);
  const producerMem = await memoryOf(pipe.producers[0]!.pid);
  const outputs = (await readdir(pipe.output)).filter((n) => n.endsWith(".bin"));
  const got = await sha256File(join(pipe.output, outputs[0]!));
  const mbps = SIZE / 1e6 / (ms / 1000);
  const cpMbps = SIZE / 1e6 / (cpMs / 1000);
  const cpSyncMbps = SIZE / 1e6 / (cpSyncMs / 1000);
  const rawMbps = SIZE / 1e6 / (raw.ms / 1000);
  const relayCpuSec = cpu1.reduce((a, b, i) => a + b - cpu0[i]!, 0);
  const rawCpuSec = raw.clientCpuSec + raw.serverCpuSec;
  await writeResult({
    name: SIZE > 2 * 1024 ** 3 ? "large-file-4g" : SIZE < 512 * 1024 ** 2 ? "large-file-small" : "large-file",
    takenAt: new Date().toISOString(),
    machine: await machineInfo(),
    metrics: {
      bytes: SIZE,
      payloadChunkBytes: CHUNK ?? "default",
      filerelayMBps: Number(mbps.toFixed(1)),
      cpMBps: Number(cpMbps.toFixed(1)),
      ratioToCp: Number((mbps / cpMbps).toFixed(3)),
      cpSyncMBps: Number(cpSyncMbps.toFixed(1)),
      ratioToCpSync: Number((mbps / cpSyncMbps).toFixed(3)),
      rawRoundTripMBps: Number(rawMbps.toFixed(1)),
      rawRoundTripMBpsRange: raws.map((r) => (SIZE / 1e6 / (r.ms / 1000)).toFixed(0)).join("–"),
      ratioToRawRoundTrip: Number((mbps / rawMbps).toFixed(3)),
      rawRoundTripCpuSec: Number(rawCpuSec.toFixed(1)),
      relayCpuSec: Number(relayCpuSec.toFixed(1)),
      cpuRatioToRawRoundTrip: Number((relayCpuSec / rawCpuSec).toFixed(2)),
      consumerCpuSec: Number((cpu1[0]! - cpu0[0]!).toFixed(1)),
      producerCpuSec: Number((cpu1[1]! - cpu0[1]!).toFixed(1)),
      natsServerCpuSec: Number((cpu1[2]! - cpu0[2]!).toFixed(1)),
      wallSec: Number((ms / 1000).toFixed(1)),
      consumerPeakRssMB: consumerMem?.peakMB ?? null,
      producerPeakRssMB: producerMem?.peakMB ?? null,
      sha256Match: got === expected ? "yes" : "NO",
    },
    notes: [
      "end to end = rename into INPUT_DIR → ctime of the output; the consumer streams the file into the JetStream Object Store (file storage), the producer streams it back out, verifies size + SHA-256, fsyncs every FSYNC_EVERY_CHUNKS chunks and at the end",
      `raw round trip (median of ${RAW_RUNS}): ${SIZE} bytes published as ${RAW_CHUNK}-byte chunks into a file-storage stream on the same nats-server (32 MiB of PubAcks outstanding) and read back with an ordered consumer, by the benchmark process; no hashing, no files; CPU = that process + nats-server`,
      "cp copies within one ext4 filesystem through the page cache (no fsync); cp+sync also waits for the copy to reach the disk",
      note,
    ],
  });
  if (got !== expected) throw new Error("relayed file differs from the source");
});

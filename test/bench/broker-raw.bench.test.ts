import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { promisify } from "node:util";
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, StorageType } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { it } from "vitest";
import { openPayload, putPayloadObject, type Envelope } from "@filerelay/core/internal";
import { startNats } from "../support/index.js";
import { cpuSecondsOf, loadNote, machineInfo, tempDir, writeResult } from "./benchSupport.js";
import { rawOrderedRead, rawPut } from "./rawRoundTrip.js";

const run = promisify(execFile);

/** Bytes per direction and chunk size (default 1 GiB). */
const TOTAL = Number(process.env.BENCH_RAW_BYTES ?? 1024 ** 3);
/** PubAcks awaited at most at once, in bytes (deep window: 32 MiB). */
const WINDOW_BYTES = Number(process.env.BENCH_RAW_WINDOW_BYTES ?? 32 * 1024 * 1024);
const CHUNK_SIZES = (process.env.BENCH_RAW_CHUNKS ?? "131072,1048576").split(",").map(Number);
const POOL_BYTES = 64 * 1024 * 1024;

/**
 * The ceiling for any JetStream object path on this machine: 1 GiB of
 * pre-generated random bytes (no file reads, no hashing) published as chunks of
 * 128 KiB and 1 MiB into a file-storage stream with a deep window of in-flight
 * PubAcks, then read back with an ordered consumer and with a pull consumer
 * (consume(), continuous credit), each timed; plus the disk's raw sequential
 * write rate with fsync (dd) for context.
 */
it(`broker raw: ${(TOTAL / 1024 ** 2).toFixed(0)} MiB each way at ${CHUNK_SIZES.map((c) => c / 1024).join(" / ")} KiB`, async () => {
  const metrics: Record<string, number | string | null> = {};
  const notes: string[] = [];
  const scratch = await tempDir("raw");
  try {
    // Disk first, on a quiet broker: 1 GiB of zeros, fsync at the end / O_DIRECT.
    const ddFile = join(scratch, "dd.bin");
    const count = Math.round(TOTAL / (1024 * 1024));
    for (const [key, flag] of [
      ["diskWriteFsyncMBps", "conv=fsync"],
      ["diskWriteDirectMBps", "oflag=direct"],
    ] as const) {
      const t0 = performance.now();
      await run("dd", ["if=/dev/zero", `of=${ddFile}`, "bs=1M", `count=${count}`, flag]);
      const secs = (performance.now() - t0) / 1000;
      metrics[key] = Number((TOTAL / 1e6 / secs).toFixed(1));
      await rm(ddFile, { force: true });
    }
    notes.push(`disk: dd if=/dev/zero bs=1M count=${count} conv=fsync (page cache + one fsync) and oflag=direct`);

    const pool = randomBytes(POOL_BYTES);
    for (const chunk of CHUNK_SIZES) {
      // A fresh server per chunk size, so the second run does not pay for the first one's store.
      await using nats = await startNats();
      const nc = await connect({ servers: nats.url, noAsyncTraces: true });
      try {
        const maxPayload = nc.info?.max_payload ?? 0;
        if (chunk > maxPayload) {
          notes.push(`${chunk} B chunks skipped: server max_payload is ${maxPayload}`);
          continue;
        }
        const kib = `${chunk / 1024}KiB`;
        const r = await oneSize(nc, nats.pid() ?? -1, pool, chunk);
        metrics[`put${kib}MBps`] = r.putMBps;
        metrics[`orderedRead${kib}MBps`] = r.orderedMBps;
        metrics[`pullRead${kib}MBps`] = r.pullMBps;
        metrics[`put${kib}ServerCpuSec`] = r.putServerCpu;
        metrics[`put${kib}ClientCpuSec`] = r.putClientCpu;
        metrics[`orderedRead${kib}ServerCpuSec`] = r.orderedServerCpu;
        metrics[`orderedRead${kib}ClientCpuSec`] = r.orderedClientCpu;
        metrics[`pullRead${kib}ServerCpuSec`] = r.pullServerCpu;
        metrics[`pullRead${kib}ClientCpuSec`] = r.pullClientCpu;
        const ours = await ourPath(nc, nats.pid() ?? -1, pool, chunk);
        metrics[`ourPut${kib}MBps`] = ours.putMBps;
        metrics[`ourOpen${kib}MBps`] = ours.openMBps;
        metrics[`ourPut${kib}ClientCpuSec`] = ours.putClientCpu;
        metrics[`ourOpen${kib}ClientCpuSec`] = ours.openClientCpu;
        metrics[`ourPut${kib}ServerCpuSec`] = ours.putServerCpu;
        metrics[`ourOpen${kib}ServerCpuSec`] = ours.openServerCpu;
        notes.push(`${kib}: server max_payload ${maxPayload}, ${r.loadNote}`);
      } finally {
        await nc.close();
      }
    }
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
  notes.push(
    "ourPut / ourOpen: core's putPayloadObject() (default in-flight window, SHA-256) from the same bytes and openPayload() (its OrderedChunkReader, size + SHA-256 verified) into an object store bucket made by @nats-io/obj, same server",
    `put: js.publish() of ${POOL_BYTES / 1024 ** 2} MiB of pre-generated random bytes cycled to ${TOTAL} bytes, at most ${WINDOW_BYTES / 1024 ** 2} MiB of PubAcks outstanding, file storage (fresh nats-server from test/support); ordered read: js.consumers.get() ordered consumer consume(); pull read: ephemeral ack-none pull consumer consume() with 8 MiB of credit (max_bytes)`,
    "client CPU = this vitest worker process (user+system), server CPU = nats-server; MB = 10^6 bytes",
    loadNote(),
  );
  await writeResult({
    name: "broker-raw",
    takenAt: new Date().toISOString(),
    machine: await machineInfo(),
    metrics,
    notes,
  });
});

interface SizeResult {
  putMBps: number;
  orderedMBps: number;
  pullMBps: number;
  putServerCpu: number;
  putClientCpu: number;
  orderedServerCpu: number;
  orderedClientCpu: number;
  pullServerCpu: number;
  pullClientCpu: number;
  loadNote: string;
}

async function oneSize(nc: NatsConnection, serverPid: number, pool: Buffer, chunk: number): Promise<SizeResult> {
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc, { timeout: 60_000 });
  const stream = "RAW";
  const subject = "raw.data";
  const chunks = Math.ceil(TOTAL / chunk);
  const cpu = async () => [await cpuSecondsOf(serverPid), process.cpuUsage()] as const;
  const cpuDelta = async (before: Awaited<ReturnType<typeof cpu>>) => {
    const s = await cpuSecondsOf(serverPid);
    const client = process.cpuUsage(before[1]);
    return {
      server: Number((s - before[0]).toFixed(2)),
      client: Number(((client.user + client.system) / 1e6).toFixed(2)),
    };
  };
  const mbps = (bytes: number, ms: number) => Number((bytes / 1e6 / (ms / 1000)).toFixed(1));
  const load = loadNote();

  // Put: a bounded window of PubAcks in flight.
  let c0 = await cpu();
  let t0 = performance.now();
  await rawPut(nc, { stream, pool, total: TOTAL, chunk, windowBytes: WINDOW_BYTES });
  const putMs = performance.now() - t0;
  const putCpu = await cpuDelta(c0);

  // Ordered consumer (nats.js): what `get()` of an object would use, minus its bugs.
  c0 = await cpu();
  t0 = performance.now();
  let got = await rawOrderedRead(nc, stream, chunks);
  const orderedMs = performance.now() - t0;
  const orderedCpu = await cpuDelta(c0);
  if (got !== TOTAL) throw new Error(`ordered read got ${got} bytes, expected ${TOTAL}`);

  // Pull consumer, continuous credit (consume refills at half of max_bytes).
  c0 = await cpu();
  t0 = performance.now();
  const ci = await jsm.consumers.add(stream, {
    filter_subject: subject,
    ack_policy: AckPolicy.None,
    deliver_policy: DeliverPolicy.All,
    mem_storage: true,
  });
  const pc = await js.consumers.get(stream, ci.name);
  got = 0;
  let n = 0;
  const piter = await pc.consume({ max_bytes: 8 * 1024 * 1024 });
  for await (const m of piter) {
    got += m.data.length;
    if (++n === chunks) break;
  }
  const pullMs = performance.now() - t0;
  const pullCpu = await cpuDelta(c0);
  if (got !== TOTAL) throw new Error(`pull read got ${got} bytes, expected ${TOTAL}`);
  await jsm.consumers.delete(stream, ci.name).catch(() => undefined);

  return {
    putMBps: mbps(TOTAL, putMs),
    orderedMBps: mbps(TOTAL, orderedMs),
    pullMBps: mbps(TOTAL, pullMs),
    putServerCpu: putCpu.server,
    putClientCpu: putCpu.client,
    orderedServerCpu: orderedCpu.server,
    orderedClientCpu: orderedCpu.client,
    pullServerCpu: pullCpu.server,
    pullClientCpu: pullCpu.client,
    loadNote: load,
  };
}

async function ourPath(
  nc: NatsConnection,
  serverPid: number,
  pool: Buffer,
  chunk: number,
): Promise<{
  putMBps: number;
  openMBps: number;
  putClientCpu: number;
  openClientCpu: number;
  putServerCpu: number;
  openServerCpu: number;
}> {
  const { Objm } = await import("@nats-io/obj");
  const bucket = "raw_payloads";
  await new Objm(nc).create(bucket, { storage: StorageType.File });
  // The pool, cycled to TOTAL bytes, as a source (views, no copies; putPayloadObject copies into chunks).
  function* source(): Generator<Buffer> {
    for (let sent = 0; sent < TOTAL;) {
      const n = Math.min(chunk, TOTAL - sent, pool.length - (sent % pool.length));
      const off = sent % pool.length;
      yield pool.subarray(off, off + n);
      sent += n;
    }
  }
  const cpu = async () => [await cpuSecondsOf(serverPid), process.cpuUsage()] as const;
  const delta = async (before: Awaited<ReturnType<typeof cpu>>) => {
    const s = await cpuSecondsOf(serverPid);
    const c = process.cpuUsage(before[1]);
    return { server: Number((s - before[0]).toFixed(2)), client: Number(((c.user + c.system) / 1e6).toFixed(2)) };
  };
  const mbps = (ms: number) => Number((TOTAL / 1e6 / (ms / 1000)).toFixed(1));
  let c0 = await cpu();
  let t0 = performance.now();
  const put = await putPayloadObject(nc, {
    bucket,
    name: "big",
    source: Readable.from(source(), { objectMode: true }),
    chunkBytes: chunk,
  });
  const putMs = performance.now() - t0;
  const putCpu = await delta(c0);
  const envelope = {
    id: "00000000-0000-4000-8000-000000000000",
    size: put.size,
    sha256: put.sha256,
    payload: { kind: "object", bucket, name: "big" },
  } as unknown as Envelope;
  c0 = await cpu();
  t0 = performance.now();
  let got = 0;
  for await (const piece of openPayload(nc, envelope, new Uint8Array(), { allowedBuckets: [bucket] })) {
    got += (piece as Buffer).length;
  }
  const openMs = performance.now() - t0;
  const openCpu = await delta(c0);
  if (got !== TOTAL) throw new Error(`openPayload read ${got} bytes, expected ${TOTAL}`);
  return {
    putMBps: mbps(putMs),
    openMBps: mbps(openMs),
    putClientCpu: putCpu.client,
    openClientCpu: openCpu.client,
    putServerCpu: putCpu.server,
    openServerCpu: openCpu.server,
  };
}

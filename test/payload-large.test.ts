import { createHash, randomFillSync, randomUUID } from "node:crypto";
import { Readable } from "node:stream";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { jetstream } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import {
  consumeFiles,
  describeError,
  envelopeToHeaders,
  jetstreamNames,
  openPayload,
  PayloadError,
  provision,
  putPayloadObject,
  silentLogger,
  type Envelope,
  type FileOutcome,
} from "@filerelay/core/internal";
import { startNats, waitFor, type NatsServer } from "./support/index.js";

const log = silentLogger();
const config = { STREAM: "FILES", SUBJECT: "files.input", STREAM_REPLICAS: 1 };
const bucket = jetstreamNames(config).payloadBucket;
const MiB = 1024 * 1024;

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

/** Random bytes produced on demand (never held whole) and hashed as they go. */
function randomSource(size: number): { stream: Readable; sha256: () => string } {
  const hash = createHash("sha256");
  let left = size;
  const stream = new Readable({
    read() {
      if (left === 0) {
        this.push(null);
        return;
      }
      const buf = randomFillSync(Buffer.allocUnsafe(Math.min(256 * 1024, left)));
      hash.update(buf);
      left -= buf.length;
      this.push(buf);
    },
  });
  return { stream, sha256: () => hash.digest("hex") };
}

function objectEnvelope(name: string, size: number, sha256: string): Envelope {
  return {
    id: name,
    source: "large",
    type: "io.filerelay.file.v1",
    time: new Date(),
    subject: `big/${name}.bin`,
    contentType: "application/octet-stream",
    filename: `${name}.bin`,
    size,
    sha256,
    mtime: new Date(),
    payload: { kind: "object", bucket, name },
  };
}

async function connectTo(nats: NatsServer): Promise<NatsConnection> {
  return connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 200 });
}

async function upload(nc: NatsConnection, size: number): Promise<{ envelope: Envelope; seconds: number }> {
  const name = randomUUID();
  const src = randomSource(size);
  const t0 = performance.now();
  const put = await putPayloadObject(nc, { bucket, name, source: src.stream });
  const seconds = (performance.now() - t0) / 1000;
  expect(put.sha256).toBe(src.sha256());
  expect(put.size).toBe(size);
  return { envelope: objectEnvelope(name, size, put.sha256), seconds };
}

/** Reads to the end; `onBytes` may pause the read (it is awaited between chunks). */
async function readAll(
  stream: Readable,
  onBytes?: (total: number) => Promise<void>,
): Promise<{ size: number; sha256: string }> {
  const hash = createHash("sha256");
  let size = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    hash.update(chunk);
    size += chunk.length;
    await onBytes?.(size);
  }
  return { size, sha256: hash.digest("hex") };
}

describe("large payloads (real nats-server)", () => {
  it("a 300 MB object: put and open with hash verification, flat memory, MB/s reported", async () => {
    await using nats = await startNats();
    const nc = await connectTo(nats);
    await provision(nc, config, { log });
    const size = 300 * 1000 * 1000;
    const live = () => {
      gc();
      const m = process.memoryUsage();
      return m.heapUsed + m.arrayBuffers;
    };
    const baseline = live();
    let peak = baseline;
    // Sampled rarely: a forced GC costs throughput.
    const sampler = setInterval(() => {
      peak = Math.max(peak, live());
    }, 250);
    try {
      const { envelope, seconds: putSeconds } = await upload(nc, size);
      const t0 = performance.now();
      // nats.js get() stalls after 16 chunks here (issue #430); ours must not.
      const read = await readAll(openPayload(nc, envelope, new Uint8Array(), { allowedBuckets: [bucket] }));
      const openSeconds = (performance.now() - t0) / 1000;
      expect(read).toEqual({ size, sha256: envelope.sha256 });
      console.log(
        `300 MB object: put ${(size / 1e6 / putSeconds).toFixed(0)} MB/s, open+verify ${(size / 1e6 / openSeconds).toFixed(0)} MB/s, peak live memory growth ${((peak - baseline) / MiB).toFixed(1)} MiB`,
      );
    } finally {
      clearInterval(sampler);
    }
    // Holding the object would take 300 MB; the pipelines hold a fixed ~20-40 MiB
    // (chunks in flight, one pull batch, client and socket buffers) whatever the size.
    expect((peak - baseline) / MiB).toBeLessThan(64);
    await nc.close();
  });

  it("broker restarted mid-read of a 200 MiB object: the read completes correctly or fails transiently", async () => {
    await using nats = await startNats();
    const nc = await connectTo(nats);
    await provision(nc, config, { log });
    const { envelope } = await upload(nc, 200 * MiB);
    let restarted = false;
    const result = await readAll(openPayload(nc, envelope, new Uint8Array()), async (total) => {
      if (!restarted && total >= 50 * MiB) {
        restarted = true;
        await nats.restart();
      }
    }).catch((err: unknown) => err);
    expect(restarted).toBe(true);
    console.log(
      `restart mid-read: ${result instanceof Error ? `failed transiently (${describeError(result)})` : "completed and verified"}`,
    );
    if (result instanceof Error) {
      expect(result).toBeInstanceOf(PayloadError);
      expect((result as PayloadError).code).toBe("PAYLOAD_READ_FAILED");
      expect((result as PayloadError).permanent).toBe(false);
    } else {
      expect(result).toEqual({ size: 200 * MiB, sha256: envelope.sha256 });
    }
    await nc.close();
  });

  it("SDK: a broker restart mid-read ends with the whole file delivered and acked", async () => {
    await using nats = await startNats();
    const nc = await connectTo(nats);
    await provision(nc, config, { log, groups: ["large"] });
    const { envelope } = await upload(nc, 200 * MiB);
    await jetstream(nc).publish("files.input", new Uint8Array(), { headers: envelopeToHeaders(envelope) });

    const ac = new AbortController();
    const outcomes: FileOutcome[] = [];
    const reads: { deliveryCount: number; size: number; sha256: string }[] = [];
    let restarted = false;
    const running = consumeFiles(
      {
        nats: nc,
        group: "large",
        log,
        signal: ac.signal,
        backoffMs: 200,
        fetchExpiresMs: 1000,
        onOutcome: (o) => outcomes.push(o),
      },
      async (ctx) => {
        const read = await readAll(ctx.open(), async (total) => {
          if (!restarted && total >= 50 * MiB) {
            restarted = true;
            await nats.restart();
          }
        });
        reads.push({ deliveryCount: ctx.deliveryCount, ...read });
        if (read.size !== ctx.envelope.size || read.sha256 !== ctx.envelope.sha256) {
          throw new Error("payload verified but bytes differ: must never happen");
        }
      },
    );
    await waitFor(() => outcomes.some((o) => o.outcome === "acked"), {
      timeoutMs: 120_000,
      message: "the large file acked",
    });
    ac.abort();
    await running;
    expect(restarted).toBe(true);
    expect(outcomes.filter((o) => o.outcome === "dead-lettered")).toEqual([]);
    // Every retry (if the read failed) was transient and the final read is complete.
    for (const o of outcomes.filter((x) => x.outcome === "retry")) expect(o.code).toBe("PAYLOAD_READ_FAILED");
    console.log(`SDK restart mid-read: outcomes ${outcomes.map((o) => `${o.outcome}@${o.deliveryCount}`).join(", ")}`);
    expect(reads.at(-1)).toMatchObject({ size: 200 * MiB, sha256: envelope.sha256 });
    await nc.close();
  });
});

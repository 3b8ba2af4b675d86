import { createHash, randomBytes, randomFillSync, randomUUID } from "node:crypto";
import { setImmediate as nextTurn } from "node:timers/promises";
import { Readable } from "node:stream";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Objm } from "@nats-io/obj";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import {
  deletePayloadObject,
  jetstreamNames,
  objectChunkSubject,
  objectStreamName,
  openPayload,
  PayloadError,
  provision,
  putPayloadObject,
  readPayloadInfo,
  silentLogger,
  type Envelope,
} from "@filerelay/core/internal";
import { startNats } from "./support/index.js";

const log = silentLogger();
const config = { STREAM: "FILES", SUBJECT: "files.input", STREAM_REPLICAS: 1 };
const bucket = jetstreamNames(config).payloadBucket;

/** Random bytes generated on demand (never held whole), hashed as they are produced. */
function randomSource(size: number, pieceBytes = 64 * 1024): { stream: Readable; sha256: () => string } {
  const hash = createHash("sha256");
  let left = size;
  const stream = new Readable({
    read() {
      if (left === 0) {
        this.push(null);
        return;
      }
      const n = Math.min(pieceBytes, left);
      const buf = randomFillSync(Buffer.allocUnsafe(n));
      hash.update(buf);
      left -= n;
      this.push(buf);
    },
  });
  return { stream, sha256: () => hash.digest("hex") };
}

// Live memory (after a forced GC) says what a pipeline holds; RSS mostly says
// how lazy the collector was.
setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

/** Samples live heap + Buffer memory while `fn` runs; returns the peak growth in MiB. */
async function peakLiveGrowthMiB(fn: () => Promise<unknown>): Promise<number> {
  const live = () => {
    gc();
    const m = process.memoryUsage();
    return m.heapUsed + m.arrayBuffers;
  };
  const baseline = live();
  let peak = baseline;
  const sampler = setInterval(() => {
    peak = Math.max(peak, live());
  }, 25);
  try {
    await fn();
  } finally {
    clearInterval(sampler);
  }
  return (peak - baseline) / 1024 / 1024;
}

function envelopeFor(name: string, size: number, sha256: string, payload: Envelope["payload"]): Envelope {
  return {
    id: name,
    source: "test",
    type: "io.filerelay.file.v1",
    time: new Date(),
    subject: "dir/file.bin",
    contentType: "application/octet-stream",
    filename: "file.bin",
    size,
    sha256,
    mtime: new Date(),
    payload,
  };
}

/** Reads a stream to the end, returning size + sha256 only. */
async function digestOf(stream: Readable): Promise<{ size: number; sha256: string }> {
  const hash = createHash("sha256");
  let size = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { size, sha256: hash.digest("hex") };
}

async function errorOf(stream: Readable): Promise<PayloadError> {
  const err = await digestOf(stream).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(PayloadError);
  return err as PayloadError;
}

async function setup(): Promise<{ nc: NatsConnection } & AsyncDisposable> {
  const nats = await startNats();
  const nc = await connect({ servers: nats.url });
  await provision(nc, config, { log });
  return {
    nc,
    [Symbol.asyncDispose]: async () => {
      await nc.close();
      await nats[Symbol.asyncDispose]();
    },
  };
}

async function roundTrip(nc: NatsConnection, size: number) {
  const name = randomUUID();
  const src = randomSource(size);
  const put = await putPayloadObject(nc, { bucket, name, source: src.stream, chunkBytes: CHUNK });
  const expected = src.sha256();
  expect(put).toMatchObject({ size, sha256: expected });
  const env = envelopeFor(name, size, expected, { kind: "object", bucket, name });
  const read = await digestOf(openPayload(nc, env, new Uint8Array(), { allowedBuckets: [bucket] }));
  expect(read).toEqual({ size, sha256: expected });
  return { name, put };
}

/** Chunk size for the tests about chunks: several per object (the default is 1 MiB). */
const CHUNK = 128 * 1024;

describe("payload transport (real nats-server)", () => {
  it("1 MiB: put then open returns identical bytes; the object is a standard Object Store object", async () => {
    await using t = await setup();
    const { name, put } = await roundTrip(t.nc, 1024 * 1024);
    expect(put.chunks).toBe(8);
    // Interop: the official client reads what we wrote and agrees on the digest.
    const os = await new Objm(t.nc).open(bucket);
    const info = await os.info(name);
    expect(info?.size).toBe(1024 * 1024);
    expect(info?.chunks).toBe(8);
    const blob = await os.getBlob(name);
    expect(
      createHash("sha256")
        .update(blob ?? new Uint8Array())
        .digest("hex"),
    ).toBe(put.sha256);
  });

  it("a source that reuses its buffer is copied; one that vouches for fresh buffers is published as it yields", async () => {
    await using t = await setup();
    const chunk = 128 * 1024;
    const pieces = Array.from({ length: 6 }, () => randomBytes(chunk));
    const expected = createHash("sha256").update(Buffer.concat(pieces)).digest("hex");
    // One buffer, overwritten with the next piece (after a turn, as a read would take) once the previous was taken.
    async function* reusing() {
      const buf = Buffer.alloc(chunk);
      for (const p of pieces) {
        await nextTurn();
        p.copy(buf);
        yield buf;
      }
    }
    async function* fresh() {
      for (const p of pieces) {
        await nextTurn();
        yield Buffer.from(p);
      }
    }
    for (const [source, freshBuffers] of [
      [reusing(), false],
      [fresh(), true],
    ] as const) {
      const name = randomUUID();
      const put = await putPayloadObject(t.nc, { bucket, name, source, chunkBytes: chunk, freshBuffers });
      expect(put).toMatchObject({ size: 6 * chunk, sha256: expected, chunks: 6 });
      const env = envelopeFor(name, put.size, expected, { kind: "object", bucket, name });
      expect(await digestOf(openPayload(t.nc, env, new Uint8Array(), { allowedBuckets: [bucket] }))).toEqual({
        size: 6 * chunk,
        sha256: expected,
      });
    }
  });

  it("50 MiB round trip streams with flat memory", async () => {
    await using t = await setup();
    const name = randomUUID();
    const src = randomSource(50 * 1024 * 1024);
    let sha = "";
    const putMiB = await peakLiveGrowthMiB(async () => {
      sha = (await putPayloadObject(t.nc, { bucket, name, source: src.stream })).sha256;
    });
    const env = envelopeFor(name, 50 * 1024 * 1024, sha, { kind: "object", bucket, name });
    expect(sha).toBe(src.sha256());
    let read: { size: number; sha256: string } | undefined;
    const readMiB = await peakLiveGrowthMiB(async () => {
      read = await digestOf(openPayload(t.nc, env, new Uint8Array()));
    });
    expect(read).toEqual({ size: 50 * 1024 * 1024, sha256: sha });
    // Buffering the file would need 50 MiB on top of a fixed overhead (~20-35 MiB
    // of chunks in flight and client/socket buffers, the same for 300 MB: see
    // payload-large.test.ts).
    expect(putMiB).toBeLessThan(48);
    expect(readMiB).toBeLessThan(48);
  });

  it("reads objects written by the official client, and empty objects", async () => {
    await using t = await setup();
    const os = await new Objm(t.nc).open(bucket);
    const data = randomBytes(300_000);
    await os.putBlob({ name: "by-nats-js", options: { max_chunk_size: 50_000 } }, data);
    const sha = createHash("sha256").update(data).digest("hex");
    const env = envelopeFor("by-nats-js", data.length, sha, { kind: "object", bucket, name: "by-nats-js" });
    expect(await digestOf(openPayload(t.nc, env, new Uint8Array()))).toEqual({ size: data.length, sha256: sha });

    const empty = await putPayloadObject(t.nc, { bucket, name: "empty", source: Readable.from([]) });
    expect(empty).toMatchObject({ size: 0, chunks: 0 });
    const envEmpty = envelopeFor("empty", 0, empty.sha256, { kind: "object", bucket, name: "empty" });
    expect(await digestOf(openPayload(t.nc, envEmpty, new Uint8Array()))).toEqual({ size: 0, sha256: empty.sha256 });
  });

  it("inline payloads are verified the same way", async () => {
    await using t = await setup();
    const body = randomBytes(200_000);
    const sha = createHash("sha256").update(body).digest("hex");
    const ok = envelopeFor("inline", body.length, sha, { kind: "inline" });
    expect(await digestOf(openPayload(t.nc, ok, body))).toEqual({ size: body.length, sha256: sha });

    const wrongSize = envelopeFor("inline", body.length + 1, sha, { kind: "inline" });
    expect((await errorOf(openPayload(t.nc, wrongSize, body))).code).toBe("PAYLOAD_SIZE_MISMATCH");
    const wrongDigest = envelopeFor("inline", body.length, "0".repeat(64), { kind: "inline" });
    expect((await errorOf(openPayload(t.nc, wrongDigest, body))).code).toBe("PAYLOAD_DIGEST_MISMATCH");
  });

  it("a replaced chunk is a digest mismatch; a missing chunk a size mismatch (both permanent)", async () => {
    await using t = await setup();
    const name = randomUUID();
    const src = randomSource(1024 * 1024);
    const put = await putPayloadObject(t.nc, { bucket, name, source: src.stream, chunkBytes: CHUNK });
    const info = await readPayloadInfo(t.nc, { bucket, name });
    expect(info?.nuid).toBe(put.nuid);
    const jsm = await jetstreamManager(t.nc);
    const stream = objectStreamName(bucket);
    const subject = objectChunkSubject(bucket, put.nuid);
    // Find the 3rd chunk and replace it with bytes of the same length.
    let seq = 0;
    for (let i = 0; i < 3; i++) {
      const m = await jsm.direct.getMessage(stream, { seq: seq + 1, next_by_subj: subject });
      seq = m?.seq ?? 0;
    }
    const third = await jsm.streams.getMessage(stream, { seq });
    expect(third?.data.length).toBe(128 * 1024);
    expect(await jsm.streams.deleteMessage(stream, seq)).toBe(true);
    await jetstream(t.nc).publish(subject, randomBytes(128 * 1024));

    const env = envelopeFor(name, put.size, put.sha256, { kind: "object", bucket, name });
    const err = await errorOf(openPayload(t.nc, env, new Uint8Array()));
    expect(err.code).toBe("PAYLOAD_DIGEST_MISMATCH");
    expect(err.permanent).toBe(true);

    // Now drop a chunk entirely: the object is short.
    const first = await jsm.direct.getMessage(stream, { seq: 1, next_by_subj: subject });
    await jsm.streams.deleteMessage(stream, first?.seq ?? 0);
    const short = await errorOf(openPayload(t.nc, env, new Uint8Array()));
    expect(short.code).toBe("PAYLOAD_SIZE_MISMATCH");
  });

  it("missing object → PAYLOAD_MISSING; foreign bucket → PAYLOAD_FOREIGN_BUCKET; envelope/meta disagreement", async () => {
    await using t = await setup();
    const sha = "a".repeat(64);
    const missing = envelopeFor("nope", 10, sha, { kind: "object", bucket, name: "nope" });
    const e1 = await errorOf(openPayload(t.nc, missing, new Uint8Array(), { allowedBuckets: [bucket] }));
    expect(e1.code).toBe("PAYLOAD_MISSING");
    expect(e1.permanent).toBe(true);

    const noBucket = envelopeFor("x", 10, sha, { kind: "object", bucket: "no_such_bucket", name: "x" });
    expect((await errorOf(openPayload(t.nc, noBucket, new Uint8Array()))).code).toBe("PAYLOAD_MISSING");

    const foreign = envelopeFor("x", 10, sha, { kind: "object", bucket: "someone_else", name: "x" });
    const e2 = await errorOf(openPayload(t.nc, foreign, new Uint8Array(), { allowedBuckets: [bucket] }));
    expect(e2.code).toBe("PAYLOAD_FOREIGN_BUCKET");

    const name = randomUUID();
    const put = await putPayloadObject(t.nc, { bucket, name, source: Readable.from([randomBytes(5000)]) });
    const wrongSize = envelopeFor(name, 4999, put.sha256, { kind: "object", bucket, name });
    expect((await errorOf(openPayload(t.nc, wrongSize, new Uint8Array()))).code).toBe("PAYLOAD_SIZE_MISMATCH");
    const wrongSha = envelopeFor(name, 5000, sha, { kind: "object", bucket, name });
    expect((await errorOf(openPayload(t.nc, wrongSha, new Uint8Array()))).code).toBe("PAYLOAD_DIGEST_MISMATCH");
  });

  it("delete removes meta and chunks; a failing source leaves no chunks and its error is rethrown", async () => {
    await using t = await setup();
    const name = randomUUID();
    const put = await putPayloadObject(t.nc, {
      bucket,
      name,
      source: randomSource(700_000).stream,
      chunkBytes: CHUNK,
    });
    const jsm = await jetstreamManager(t.nc);
    const chunkCount = async (id: string) => {
      const si = await jsm.streams.info(objectStreamName(bucket), { subjects_filter: objectChunkSubject(bucket, id) });
      return Object.values(si.state.subjects ?? {}).reduce((a, b) => a + b, 0);
    };
    expect(await chunkCount(put.nuid)).toBe(6);
    await deletePayloadObject(t.nc, { kind: "object", bucket, name });
    expect(await readPayloadInfo(t.nc, { bucket, name })).toBeNull();
    expect(await chunkCount(put.nuid)).toBe(0);

    const boom = new Error("disk on fire");
    async function* failing() {
      yield await Promise.resolve(randomBytes(400_000));
      yield randomBytes(400_000);
      throw boom;
    }
    const progress: number[] = [];
    const err = await putPayloadObject(t.nc, {
      bucket,
      name: "broken",
      source: failing(),
      chunkBytes: CHUNK,
      onProgress: (b) => progress.push(b),
    }).catch((e: unknown) => e);
    expect(err).toBe(boom);
    expect(progress.length).toBeGreaterThan(0);
    expect(await readPayloadInfo(t.nc, { bucket, name: "broken" })).toBeNull();
    const si = await jsm.streams.info(objectStreamName(bucket), { subjects_filter: `$O.${bucket}.C.>` });
    expect(Object.keys(si.state.subjects ?? {})).toEqual([]);
  });

  it("re-putting an object under the same name replaces it and drops the old chunks", async () => {
    await using t = await setup();
    const a = await putPayloadObject(t.nc, { bucket, name: "same", source: randomSource(300_000).stream });
    const b = await putPayloadObject(t.nc, { bucket, name: "same", source: randomSource(200_000).stream });
    expect(b.nuid).not.toBe(a.nuid);
    const info = await readPayloadInfo(t.nc, { bucket, name: "same" });
    expect(info).toMatchObject({ nuid: b.nuid, size: 200_000 });
    const jsm = await jetstreamManager(t.nc);
    const si = await jsm.streams.info(objectStreamName(bucket), { subjects_filter: `$O.${bucket}.C.>` });
    expect(Object.keys(si.state.subjects ?? {})).toEqual([objectChunkSubject(bucket, b.nuid)]);
  });
});

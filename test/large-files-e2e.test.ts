/**
 * Issue 5's large-file tests, end to end through the built services
 * (`pnpm build` first): consumer → NATS (Object Store payloads) → producer.
 * Inputs are seeded bytes written as streams and outputs are hashed as
 * streams, so nothing here holds a large file in memory.
 */
import { randomUUID } from "node:crypto";
import { mkdir, mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { Objm } from "@nats-io/obj";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  createPayloadJanitor,
  envelopeToHeaders,
  jetstreamNames,
  objectChunkSubject,
  objectStreamName,
  provision,
  putPayloadObject,
  silentLogger,
  type Envelope,
} from "@filerelay/core/internal";
import {
  isPartialName,
  seededBytes,
  sha256File,
  startNats,
  startService,
  waitFor,
  walkFiles,
  writeSeededFile,
  type NatsServer,
  type RunningService,
} from "./support/index.js";
import { outcomeLines, readDeadLetters, todayDir } from "./producer-support.js";

const MiB = 1024 * 1024;
const config = { STREAM: "FILES", SUBJECT: "files.input" };
const GROUP = "file-producers";
const bucket = jetstreamNames(config).payloadBucket; // FILES_payloads
const objStream = objectStreamName(bucket); // OBJ_FILES_payloads

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "large-files-e2e-"));
  await mkdir(join(root, "input"), { recursive: true });
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const inputDir = () => join(root, "input");
const outputDir = () => join(root, "output");

const consumerEnv = (natsUrl: string) => ({
  NATS_URL: natsUrl,
  INPUT_DIR: inputDir(),
  ARCHIVE_DIR: join(root, "archive"),
  ERROR_DIR: join(root, "consumer-error"),
  STABILITY_MS: "300",
  POLL_INTERVAL_MS: "1000",
  LOG_LEVEL: "info",
});

const producerEnv = (natsUrl: string) => ({
  NATS_URL: natsUrl,
  OUTPUT_DIR: outputDir(),
  ACK_WAIT_MS: "10000",
  RETRY_BACKOFF_MS: "200",
  LOG_LEVEL: "info",
});

async function startConsumer(nats: NatsServer): Promise<RunningService> {
  const svc = startService("consumer", consumerEnv(nats.url));
  await svc.waitForLog((l) => l.msg === "consumer started", 60_000, "consumer started");
  return svc;
}

async function startProducer(nats: NatsServer): Promise<RunningService> {
  const svc = startService("producer", producerEnv(nats.url));
  await svc.waitForLog((l) => l.msg === "consuming files", 60_000, "producer ready");
  return svc;
}

/** Writes `size` seeded bytes under a dot-name in INPUT_DIR (skipped by the consumer), then renames it in. */
function dropSeeded(name: string, size: number): Promise<string> {
  return writeSeededFile(join(inputDir(), name), name, size, { via: join(inputDir(), `.staging-${name}`) });
}

/** Final and partial files under OUTPUT_DIR. */
async function outputTree(): Promise<{ finals: string[]; partial: string[] }> {
  const all = await walkFiles(outputDir());
  return { finals: all.filter((f) => !isPartialName(f)), partial: all.filter(isPartialName) };
}

const published = (svc: RunningService) => svc.logs().filter((l) => l.msg === "file published");

async function connectTo(nats: NatsServer): Promise<NatsConnection> {
  return connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 200 });
}

async function streamMessages(jsm: JetStreamManager, stream: string, subjectsFilter?: string): Promise<number> {
  if (!subjectsFilter) return (await jsm.streams.info(stream)).state.messages;
  const si = await jsm.streams.info(stream, { subjects_filter: subjectsFilter });
  return Object.values(si.state.subjects ?? {}).reduce((a, b) => a + b, 0);
}

/**
 * Once the FILES stream has no envelope left (interest retention dropped the
 * acked ones), runs the payload janitor with no grace period.
 */
async function drainAndRunJanitor(nc: NatsConnection) {
  const jsm = await jetstreamManager(nc);
  await waitFor(async () => (await streamMessages(jsm, "FILES")) === 0, {
    timeoutMs: 60_000,
    message: "the FILES stream to drain",
  });
  await using janitor = createPayloadJanitor(nc, { config, log: silentLogger(), graceMs: 0 });
  return await janitor.runOnce();
}

/** Waits until no object meta is left (the sink whose ack was the last released them). */
async function waitForReleased(nc: NatsConnection): Promise<void> {
  const jsm = await jetstreamManager(nc);
  await waitFor(async () => (await streamMessages(jsm, objStream, `$O.${bucket}.M.>`)) === 0, {
    timeoutMs: 10_000,
    message: "the payload objects released",
  });
}

async function objectNames(nc: NatsConnection): Promise<string[]> {
  const os = await new Objm(nc).open(bucket);
  const names: string[] = [];
  for (const info of await os.list()) if (!info.deleted) names.push(info.name);
  return names;
}

describe("large files end to end: consumer → NATS Object Store → producer (built services)", () => {
  it("1 MiB, 50 MiB and 600 MiB files arrive with identical sha256; the payload objects are gone afterwards", async () => {
    await using nats = await startNats();
    await using consumer = await startConsumer(nats);
    await using producer = await startProducer(nats);

    const sizes = { "one.bin": 1 * MiB, "fifty.bin": 50 * MiB, "six-hundred.bin": 600 * MiB };
    const expected = new Map<string, string>(); // sha256 → name
    for (const [name, size] of Object.entries(sizes)) expected.set(await dropSeeded(name, size), name);

    await waitFor(() => outcomeLines(producer).length >= 3, {
      timeoutMs: 150_000,
      message: "3 files written by the producer",
    });
    expect(outcomeLines(producer).every((l) => l.outcome === "written")).toBe(true);
    expect(published(consumer)).toHaveLength(3);

    const { finals, partial } = await outputTree();
    expect(partial).toEqual([]);
    expect(finals).toHaveLength(3);
    const seen = new Set<string>();
    for (const rel of finals) {
      expect(rel.startsWith(`${todayDir()}/`), rel).toBe(true);
      const sha = await sha256File(join(outputDir(), rel));
      expect(expected.has(sha), `${rel} has the bytes of an input`).toBe(true);
      seen.add(sha);
    }
    expect(seen.size).toBe(3);

    // Every payload went through the Object Store (all are over INLINE_MAX_BYTES)…
    const nc = await connectTo(nats);
    try {
      const jsm = await jetstreamManager(nc);
      // …and once every envelope is acknowledged, the producer (the last group) releases the objects.
      await waitForReleased(nc);
      expect((await drainAndRunJanitor(nc)).deleted).toBe(0);
      expect(await objectNames(nc)).toEqual([]);
      expect(await streamMessages(jsm, objStream, `$O.${bucket}.M.>`)).toBe(0);
      expect(await streamMessages(jsm, objStream, `$O.${bucket}.C.>`)).toBe(0);
    } finally {
      await nc.close();
    }
    expect(await producer.stop()).toBe(0);
    expect(await consumer.stop()).toBe(0);
  }, 200_000);

  it("consumer SIGKILLed mid-upload of 200 MiB: no envelope, relayed once after restart, no orphan chunks after cleanup", async () => {
    await using nats = await startNats();
    const nc = await connectTo(nats);
    try {
      const jsm = await jetstreamManager(nc);
      const first = await startConsumer(nats);
      await using producer = await startProducer(nats);

      const sha = await dropSeeded("killed.bin", 200 * MiB);
      // Kill once the upload is well under way (> 20 MiB of chunks stored).
      await waitFor(async () => (await jsm.streams.info(objStream)).state.bytes > 20 * MiB, {
        timeoutMs: 90_000,
        intervalMs: 20,
        message: "the upload to be under way",
      });
      await first.kill();
      const partialBytes = (await jsm.streams.info(objStream)).state.bytes;
      expect(partialBytes).toBeLessThan(200 * MiB);

      // No envelope was published: FILES never held a message, the group never saw one, no meta exists.
      expect(published(first)).toHaveLength(0);
      const files = await jsm.streams.info("FILES");
      expect(files.state.messages).toBe(0);
      expect(files.state.last_seq).toBe(0);
      expect((await jsm.consumers.info("FILES", GROUP)).delivered.stream_seq).toBe(0);
      expect(await streamMessages(jsm, objStream, `$O.${bucket}.M.>`)).toBe(0);
      expect(await streamMessages(jsm, objStream, `$O.${bucket}.C.>`)).toBeGreaterThan(0);
      expect(outcomeLines(producer)).toHaveLength(0);

      await using second = await startConsumer(nats);
      await waitFor(() => outcomeLines(producer).length >= 1, {
        timeoutMs: 120_000,
        message: "the file written after the consumer restarted",
      });
      expect(published(second)).toHaveLength(1);
      const { finals, partial } = await outputTree();
      expect(partial).toEqual([]);
      expect(finals).toHaveLength(1);
      expect(await sha256File(join(outputDir(), finals[0]!))).toBe(sha);

      // The relayed object is released by the producer; the killed upload's chunks are the sweep's.
      await waitForReleased(nc);
      const run = await drainAndRunJanitor(nc);
      expect(run.deleted).toBe(0);
      expect(run.orphanChunksPurged).toBeGreaterThanOrEqual(1);
      expect(await objectNames(nc)).toEqual([]);
      expect(await streamMessages(jsm, objStream)).toBe(0);
      // Nothing more arrived in the meantime: relayed exactly once.
      expect(outcomeLines(producer)).toHaveLength(1);
      expect((await outputTree()).finals).toHaveLength(1);
      expect(await producer.stop()).toBe(0);
      expect(await second.stop()).toBe(0);
    } finally {
      await nc.close();
    }
  }, 200_000);

  it("broker restarted while the producer reads a 200 MiB object: written once, complete", async () => {
    await using nats = await startNats();
    await using consumer = await startConsumer(nats);
    const sha = await dropSeeded("restart.bin", 200 * MiB);
    // The object is complete before the producer starts, so the restart hits the read.
    await consumer.waitForLog((l) => l.msg === "file published", 90_000, "the 200 MiB file published");

    await using producer = await startProducer(nats);
    const dateDir = join(outputDir(), todayDir());
    await waitFor(
      async () => {
        for (const rel of await walkFiles(dateDir)) {
          if (rel.startsWith(".filerelay-") && rel.endsWith(".tmp") && (await stat(join(dateDir, rel))).size > 10 * MiB)
            return true;
        }
        return false;
      },
      { timeoutMs: 90_000, intervalMs: 20, message: "the producer's temp file to pass 10 MiB" },
    );
    await nats.restart();

    await waitFor(() => outcomeLines(producer).length >= 1, {
      timeoutMs: 150_000,
      message: "the file written after the broker restart",
    });
    const nc = await connectTo(nats);
    try {
      // Acknowledged, so the interest stream drops it: nothing is left to redeliver.
      const jsm = await jetstreamManager(nc);
      await waitFor(async () => (await streamMessages(jsm, "FILES")) === 0, {
        timeoutMs: 60_000,
        message: "the envelope acknowledged",
      });
      expect(await readDeadLetters(nc, GROUP)).toEqual([]);
    } finally {
      await nc.close();
    }
    // The restart hit the read: the producer lost its connection before the file was written.
    const logs = producer.logs();
    const disconnected = logs.findIndex((l) => l.msg === "disconnected from NATS; reconnecting");
    expect(disconnected).toBeGreaterThanOrEqual(0);
    expect(disconnected).toBeLessThan(logs.indexOf(outcomeLines(producer)[0]!));
    expect(outcomeLines(producer)).toHaveLength(1);
    expect(outcomeLines(producer)[0]!.outcome).toBe("written");
    const { finals, partial } = await outputTree();
    expect(partial).toEqual([]);
    expect(finals).toHaveLength(1);
    expect(await sha256File(join(outputDir(), finals[0]!))).toBe(sha);
    expect(await producer.stop()).toBe(0);
    expect(await consumer.stop()).toBe(0);
  }, 200_000);

  it("a tampered object (one chunk replaced) is dead-lettered with PAYLOAD_DIGEST_MISMATCH and nothing is written", async () => {
    await using nats = await startNats();
    const nc = await connectTo(nats);
    try {
      await provision(nc, { ...config, STREAM_REPLICAS: 1 }, { log: silentLogger() });
      const name = randomUUID();
      const size = 8 * MiB;
      const put = await putPayloadObject(nc, { bucket, name, source: Readable.from(seededBytes(name, size)) });
      expect(put.size).toBe(size);

      // Replace the 3rd chunk with different bytes of the same length (it moves to the end of the stream).
      const jsm = await jetstreamManager(nc);
      const chunkSubject = objectChunkSubject(bucket, put.nuid);
      let seq = 0;
      for (let i = 0; i < 3; i++) {
        const m = await jsm.direct.getMessage(objStream, { seq: seq + 1, next_by_subj: chunkSubject });
        seq = m?.seq ?? 0;
      }
      const third = await jsm.streams.getMessage(objStream, { seq });
      const length = third?.data.length ?? 0;
      expect(length).toBeGreaterThan(0);
      expect(await jsm.streams.deleteMessage(objStream, seq)).toBe(true);
      const [replacement] = seededBytes(`${name}-tampered`, length);
      await jetstream(nc).publish(chunkSubject, replacement);

      const envelope: Envelope = {
        id: name,
        source: "api",
        type: "io.filerelay.file.v1",
        time: new Date(),
        subject: "tampered/big.bin",
        contentType: "application/octet-stream",
        filename: "big.bin",
        size,
        sha256: put.sha256,
        mtime: new Date(),
        payload: { kind: "object", bucket, name },
      };
      // The producer creates its group first: an interest stream keeps nothing nobody is subscribed to.
      await using producer = await startProducer(nats);
      await jetstream(nc).publish(config.SUBJECT, new Uint8Array(), { headers: envelopeToHeaders(envelope) });
      const letters = await waitFor(
        async () => {
          const dl = await readDeadLetters(nc, GROUP);
          return dl.length > 0 ? dl : undefined;
        },
        { timeoutMs: 90_000, message: "the tampered envelope dead-lettered" },
      ).catch((err: unknown) => {
        throw new Error(`${String(err)}; producer logs: ${JSON.stringify(producer.logs().slice(-20))}`);
      });
      expect(letters).toHaveLength(1);
      expect(letters[0]!.code).toBe("PAYLOAD_DIGEST_MISMATCH");
      expect(letters[0]!.headers["ce-id"]).toBe(name);
      // Acked after dead-lettering: not retried.
      await waitFor(async () => (await streamMessages(jsm, "FILES")) === 0, {
        timeoutMs: 60_000,
        message: "the envelope removed from FILES",
      });

      expect(outcomeLines(producer)).toHaveLength(0);
      // No final file, no temp left behind.
      expect(await walkFiles(outputDir())).toEqual([]);
      expect(await producer.stop()).toBe(0);
    } finally {
      await nc.close();
    }
  }, 150_000);
});

/**
 * Storage lifecycle (DESIGN §12), through the built services (`pnpm build`
 * first): what the pipeline stores on the broker goes away again without any
 * test-side cleanup. Payload objects are released within seconds of the last
 * group's ack, kept while a dead letter needs them, and orphans are swept by
 * one replica per interval.
 */
import { spawn } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  jetstreamNames,
  objectChunkSubject,
  objectStreamName,
  putPayloadObject,
  readPayloadInfo,
} from "@filerelay/core/internal";
import {
  guardChild,
  sha256File,
  startNats,
  startService,
  waitFor,
  waitForExit,
  walkFiles,
  writeSeededFile,
  type LogLine,
  type NatsServer,
  type RunningService,
} from "./support/index.js";
import { readDeadLetters } from "./producer-support.js";

const MiB = 1024 * 1024;
const bucket = jetstreamNames({ STREAM: "FILES", SUBJECT: "files.input" }).payloadBucket;
const objStream = objectStreamName(bucket);
/** What "≈ 0" means for the payload bucket: purges leave no tombstones, so a few KB is generous. */
const EMPTY_BUCKET_BYTES = 4 * 1024;
/** How soon after the last ack the bucket must be empty. */
const RELEASE_WITHIN_MS = 10_000;
/** A short fingerprint window, so that expiry is seen within a test. */
const FINGERPRINT_TTL_MS = 4000;
const fingerprintStream = `KV_${jetstreamNames({ STREAM: "FILES", SUBJECT: "files.input" }).fingerprintBucket}`;
const CLI = fileURLToPath(new URL("../packages/cli/dist/main.js", import.meta.url));

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "storage-lifecycle-"));
  await mkdir(join(root, "input"), { recursive: true });
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const inputDir = () => join(root, "input");

function startConsumer(nats: NatsServer, env: Record<string, string> = {}): RunningService {
  return startService("consumer", {
    NATS_URL: nats.url,
    INPUT_DIR: inputDir(),
    DELETE_AFTER_PROCESSING: "true",
    STABILITY_MS: "300",
    POLL_INTERVAL_MS: "1000",
    ...env,
  });
}

function startProducer(nats: NatsServer, outputDir: string, env: Record<string, string> = {}): RunningService {
  return startService("producer", {
    NATS_URL: nats.url,
    OUTPUT_DIR: outputDir,
    ACK_WAIT_MS: "10000",
    RETRY_BACKOFF_MS: "200",
    ...env,
  });
}

const ready = (svc: RunningService, msg: string) => svc.waitForLog((l) => l.msg === msg, 60_000, `${svc.name}: ${msg}`);

/** Writes `size` seeded bytes under a dot-name in INPUT_DIR (skipped by the consumer), then renames it in. */
function dropSeeded(name: string, size: number): Promise<string> {
  return writeSeededFile(join(inputDir(), name), name, size, { via: join(inputDir(), `.staging-${name}`) });
}

const written = (svc: RunningService) => svc.logs().filter((l) => l.msg === "file written");

/** Messages in the fingerprint bucket (records and delete markers alike). */
async function fingerprintRecords(jsm: JetStreamManager): Promise<number> {
  return (await jsm.streams.info(fingerprintStream)).state.messages;
}

async function bucketBytes(jsm: JetStreamManager): Promise<number> {
  return (await jsm.streams.info(objStream)).state.bytes;
}

/** Waits until the payload bucket is ≈ empty, failing unless that happens within RELEASE_WITHIN_MS of `line`. */
async function expectReleasedSoonAfter(jsm: JetStreamManager, line: LogLine): Promise<void> {
  const ackedAt = Date.parse(String(line.time));
  await waitFor(async () => (await bucketBytes(jsm)) <= EMPTY_BUCKET_BYTES, {
    timeoutMs: Math.max(0, ackedAt + RELEASE_WITHIN_MS - Date.now()),
    message: `the payload bucket to empty within ${RELEASE_WITHIN_MS} ms of the last ack`,
  }).catch(async (err: unknown) => {
    throw new Error(`${(err as Error).message}; it holds ${await bucketBytes(jsm)} bytes`);
  });
}

async function connectTo(nats: NatsServer): Promise<NatsConnection> {
  return connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 200 });
}

/** Runs the built CLI with --json (in an empty directory, so no stray .env is read). */
async function cliJson<T>(args: string[], natsUrl: string): Promise<T> {
  const child = guardChild(
    spawn(process.execPath, [CLI, ...args, "--json"], {
      cwd: root,
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", NATS_URL: natsUrl },
      stdio: ["ignore", "pipe", "pipe"],
    }),
  );
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (c: Buffer) => (stdout += c.toString("utf8")));
  child.stderr?.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
  const code = await waitForExit(child, 60_000);
  expect(code, `filerelay ${args.join(" ")}: ${stderr}`).toBe(0);
  return JSON.parse(stdout) as T;
}

describe("payload objects are released by the running services", () => {
  it("a 50 MiB file: the payload bucket is empty within 10 s of the producer's ack", async () => {
    await using nats = await startNats();
    await using consumer = startConsumer(nats);
    await ready(consumer, "consumer started");
    await using producer = startProducer(nats, join(root, "out"));
    await ready(producer, "consuming files");
    const nc = await connectTo(nats);
    try {
      const jsm = await jetstreamManager(nc);
      const sha = await dropSeeded("fifty.bin", 50 * MiB);
      const line = await producer.waitForLog((l) => l.msg === "file written", 120_000, "the 50 MiB file written");
      expect(line.sha256).toBe(sha);
      await expectReleasedSoonAfter(jsm, line);
      // The default sweep (every 5 min) has not run: the release was the ack's.
      expect([...consumer.logs(), ...producer.logs()].some((l) => l.msg === "payload sweep started")).toBe(false);
    } finally {
      await nc.close();
    }
  }, 180_000);

  it("two groups: kept until the second acks; a dead letter pins it for a replay", async () => {
    await using nats = await startNats();
    await using consumer = startConsumer(nats, { SINK_GROUPS: "a,b" });
    await ready(consumer, "consumer started");
    const nc = await connectTo(nats);
    try {
      const jsm = await jetstreamManager(nc);

      // 1. Group a acks, b has not started: the object stays.
      await using a = startProducer(nats, join(root, "out-a"), { PRODUCER_GROUP: "a" });
      await ready(a, "consuming files");
      await dropSeeded("both.bin", 3 * MiB);
      await a.waitForLog(
        (l) => l.msg === "payload object kept: another group has not acknowledged its envelope",
        60_000,
        "group a's release check to find b pending",
      );
      expect(await bucketBytes(jsm)).toBeGreaterThan(3 * MiB);
      // b acks last and releases it.
      await using b = startProducer(nats, join(root, "out-b"), { PRODUCER_GROUP: "b" });
      const bWritten = await b.waitForLog((l) => l.msg === "file written", 60_000, "group b writes both.bin");
      await expectReleasedSoonAfter(jsm, bWritten);
      expect(await a.stop()).toBe(0);
      expect(await b.stop()).toBe(0);

      // 2. Group a dead-letters (too large for it), then b acks: pinned, kept.
      await using small = startProducer(nats, join(root, "out-a"), { PRODUCER_GROUP: "a", MAX_FILE_SIZE: "1MiB" });
      await ready(small, "consuming files");
      const sha = await dropSeeded("dead.bin", 3 * MiB);
      const [letter] = await waitFor(
        async () => {
          const dl = await readDeadLetters(nc, "a");
          return dl.length > 0 ? dl : undefined;
        },
        { timeoutMs: 60_000, message: "group a's dead letter" },
      );
      expect(letter?.code).toBe("ENVELOPE_TOO_LARGE");
      await using b2 = startProducer(nats, join(root, "out-b"), { PRODUCER_GROUP: "b" });
      await b2.waitForLog(
        (l) => l.msg === "payload object not released" && l.verdict === "pinned",
        60_000,
        "group b's release check to find the object pinned",
      );
      const name = String(letter?.headers["ce-id"]);
      expect(await readPayloadInfo(nc, { bucket, name })).not.toBeNull();

      // The replay reads the payload: group a (now without the limit) writes it.
      expect(await small.stop()).toBe(0);
      await using big = startProducer(nats, join(root, "out-a"), { PRODUCER_GROUP: "a" });
      await ready(big, "consuming files");
      const out = await cliJson<{ replayed: unknown[] }>(["dlq", "replay", "--all"], nats.url);
      expect(out.replayed).toHaveLength(1);
      const line = await big.waitForLog((l) => l.msg === "file written", 60_000, "the replayed file written");
      expect(line.sha256).toBe(sha);
      const files = await walkFiles(join(root, "out-a"));
      const hashes = await Promise.all(files.map((f) => sha256File(join(root, "out-a", f))));
      expect(hashes).toContain(sha);
    } finally {
      await nc.close();
    }
  }, 240_000);
});

describe("the payload sweep in the running services", () => {
  it("removes an object no envelope references and an interrupted upload's chunks; one replica sweeps per interval", async () => {
    const intervalMs = 1000;
    await using nats = await startNats();
    const sweepEnv = { PAYLOAD_SWEEP_INTERVAL_MS: String(intervalMs), PAYLOAD_ORPHAN_GRACE_MS: "1000" };
    await using consumer = startConsumer(nats, sweepEnv);
    await ready(consumer, "consumer started");
    await using p1 = startProducer(nats, join(root, "out"), sweepEnv);
    await using p2 = startProducer(nats, join(root, "out"), sweepEnv);
    await Promise.all([ready(p1, "consuming files"), ready(p2, "consuming files")]);
    const services = [consumer, p1, p2];
    const nc = await connectTo(nats);
    try {
      const jsm = await jetstreamManager(nc);
      // A consumer that crashed between upload and publish, and one that died mid-upload.
      const orphan = randomUUID();
      await putPayloadObject(nc, { bucket, name: orphan, source: Readable.from([randomBytes(300_000)]) });
      const interrupted = objectChunkSubject(bucket, "INTERRUPTEDUPLOAD000000");
      for (let i = 0; i < 3; i++) await jetstream(nc).publish(interrupted, randomBytes(128 * 1024));

      await waitFor(async () => (await bucketBytes(jsm)) === 0, {
        timeoutMs: 20_000,
        message: "the sweep to remove the orphan object and chunks",
      });
      expect(await readPayloadInfo(nc, { bucket, name: orphan })).toBeNull();
      // Logged at info by whichever replica swept (log lines are flushed on a short timer).
      const logged = (msg: string) => services.some((s) => s.logs().some((l) => l.msg === msg && l.level === "info"));
      await waitFor(
        () =>
          logged("payload object removed by the sweep: no envelope references it") &&
          logged("orphan payload chunks purged (upload never finished)"),
        { timeoutMs: 5000, message: "the sweep's removals logged at info" },
      );

      // A few more intervals, then: sweeps never overlap an interval, whoever ran them.
      const sweeps = () =>
        services
          .flatMap((s) => s.logs().filter((l) => l.msg === "payload sweep started"))
          .map((l) => Date.parse(String(l.time)))
          .sort((x, y) => x - y);
      await waitFor(() => sweeps().length >= 5, { timeoutMs: 30_000, message: "five sweeps" });
      const starts = sweeps();
      for (let i = 1; i < starts.length; i++) {
        expect(starts[i]! - starts[i - 1]!, `sweep ${i} after sweep ${i - 1}`).toBeGreaterThanOrEqual(intervalMs - 100);
      }
    } finally {
      await nc.close();
    }
  }, 120_000);
});

describe("soak: 40 × 20 MiB", () => {
  it("the payload bucket returns to ≈ 0 within 10 s of the last ack; fingerprint records expire after their window", async () => {
    const count = 40;
    await using nats = await startNats();
    await using consumer = startConsumer(nats, { FINGERPRINT_TTL_MS: String(FINGERPRINT_TTL_MS) });
    await ready(consumer, "consumer started");
    await using producer = startProducer(nats, join(root, "out"));
    await ready(producer, "consuming files");
    const nc = await connectTo(nats);
    try {
      const jsm = await jetstreamManager(nc);
      let peak = 0;
      const expected = new Set<string>();
      for (let i = 0; i < count; i++) {
        expected.add(await dropSeeded(`soak-${i}.bin`, 20 * MiB));
        peak = Math.max(peak, await bucketBytes(jsm));
      }
      await waitFor(
        async () => {
          peak = Math.max(peak, await bucketBytes(jsm));
          return written(producer).length >= count;
        },
        { timeoutMs: 240_000, intervalMs: 200, message: `${count} files written` },
      );
      const lines = written(producer);
      expect(new Set(lines.map((l) => l.sha256))).toEqual(expected);
      await expectReleasedSoonAfter(jsm, lines[lines.length - 1]!);
      // Released as they went, not all held until the end.
      expect(peak).toBeLessThan(count * 20 * MiB);
      console.log(`soak: payload bucket peak ${(peak / MiB).toFixed(0)} MiB for ${count * 20} MiB relayed`);
      // Deleted files need their fingerprints no longer than the window: the bucket empties by itself.
      await waitFor(async () => (await fingerprintRecords(jsm)) === 0, {
        timeoutMs: FINGERPRINT_TTL_MS + 10_000,
        message: "the fingerprint bucket to empty after FINGERPRINT_TTL_MS",
      });
    } finally {
      await nc.close();
    }
  }, 300_000);
});

describe("fingerprint records of files left in place", () => {
  it("are refreshed while the files stay (outliving the window) and forgotten when they go", async () => {
    await using nats = await startNats();
    const env = {
      DELETE_AFTER_PROCESSING: "false",
      POLL_INTERVAL_MS: "200",
      FINGERPRINT_TTL_MS: String(FINGERPRINT_TTL_MS),
    };
    const nc = await connectTo(nats);
    try {
      const jsm = await jetstreamManager(nc);
      const keep = await dropSeeded("keep.csv", 1000);
      await dropSeeded("gone.csv", 2000);
      {
        await using consumer = startConsumer(nats, env);
        await waitFor(() => consumer.logs().filter((l) => l.msg === "file published").length === 2, {
          message: "both files published",
        });
        const publishedAt = Date.now();
        // Past the window, the records are still there: rewritten half-way.
        const refreshed = consumer
          .logs()
          .filter((l) => l.msg === "refreshed the fingerprint records of files left in place").length;
        await consumer.waitForLog(
          () =>
            consumer.logs().filter((l) => l.msg === "refreshed the fingerprint records of files left in place")
              .length >=
            refreshed + 3,
          FINGERPRINT_TTL_MS * 4,
        );
        // A file removed by someone else: its record goes (a purge leaves one marker, which expires too).
        await rm(join(inputDir(), "gone.csv"));
        const kv = await new Kvm(nc).open(
          jetstreamNames({ STREAM: "FILES", SUBJECT: "files.input" }).fingerprintBucket,
        );
        expect(Date.now() - publishedAt).toBeGreaterThan(FINGERPRINT_TTL_MS);
        await waitFor(
          async () => {
            const live: string[] = [];
            for await (const key of await kv.keys()) {
              const e = await kv.get(key);
              if (e?.operation === "PUT") live.push(e.json<{ sha256: string }>().sha256);
            }
            return live.length === 1 && live[0] === keep;
          },
          { message: "one live fingerprint record: keep.csv's" },
        );
      }
      // Nothing was published again meanwhile: the record of keep.csv outlived the window while the file stayed.
      expect((await jsm.streams.info("FILES")).state.last_seq).toBe(2);
    } finally {
      await nc.close();
    }
  }, 120_000);
});

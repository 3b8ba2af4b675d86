import { spawn, type ChildProcess } from "node:child_process";
import { createCipheriv, createHash, randomBytes, randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { createServer, connect, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import type { Envelope } from "@filerelay/core";
import type * as S3Sdk from "../../packages/producer/node_modules/@aws-sdk/client-s3/dist-types/index.js";
import { freePort } from "./ports.js";
import { guardChild, waitForExit } from "./processes.js";
import { waitFor } from "./wait.js";

/**
 * The AWS SDK is a dependency of the producer only, so files under test/ cannot
 * import it by name: load the producer's copy (the one the S3 sink uses).
 */
const requireFromProducer = createRequire(new URL("../../packages/producer/package.json", import.meta.url));
export const s3sdk = requireFromProducer("@aws-sdk/client-s3") as typeof S3Sdk;
export type S3Client = S3Sdk.S3Client;

export interface StartS3Options {
  /** Bucket to create (default: a fresh unique name). */
  bucket?: string;
}

export interface StoredObject {
  key: string;
  size: number;
  sha256: string;
  contentType: string | undefined;
  metadata: Record<string, string>;
}

export interface S3Server extends AsyncDisposable {
  /** s3rver: local child process; minio: Testcontainers; external: FILERELAY_TEST_S3_ENDPOINT. */
  kind: "s3rver" | "minio" | "external";
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  bucket: string;
  /** Path-style addressing (always, for local stores). */
  forcePathStyle: boolean;
  /** False for external/Docker stores: stop() and restart() then throw. */
  controllable: boolean;
  /** Environment for a producer with SINK=s3 writing to this store. */
  env(): Record<string, string>;
  /** A client for assertions (checksums only when required, which every store accepts). */
  client(): S3Client;
  createBucket(name: string): Promise<void>;
  /** Every key under `prefix`, sorted. */
  listKeys(prefix?: string): Promise<string[]>;
  /** Streams the object and hashes it (never buffers it whole); undefined if absent. */
  describe(key: string): Promise<StoredObject | undefined>;
  /** Takes the endpoint away: open connections dropped, new ones refused until restart(). */
  stop(): Promise<void>;
  /** The endpoint answers again on the same port, with the same data directory. */
  restart(): Promise<void>;
  /** What s3rver printed (last lines), for failure messages. */
  output(): string;
}

const S3RVER_BIN = fileURLToPath(new URL("../../node_modules/s3rver/bin/s3rver.js", import.meta.url));
const S3RVER_CREDENTIALS = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" };

/**
 * An S3-protocol store for tests: s3rver in a child process on a free loopback
 * port with a temporary data directory (default); the store named by
 * FILERELAY_TEST_S3_ENDPOINT (credentials from FILERELAY_TEST_S3_ACCESS_KEY_ID /
 * FILERELAY_TEST_S3_SECRET_ACCESS_KEY or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY);
 * or MinIO through Testcontainers when FILERELAY_TEST_DOCKER=1.
 */
export async function startS3(options: StartS3Options = {}): Promise<S3Server> {
  const bucket = options.bucket ?? `filerelay-test-${randomBytes(4).toString("hex")}`;
  const external = process.env.FILERELAY_TEST_S3_ENDPOINT;
  if (external) {
    const accessKeyId = process.env.FILERELAY_TEST_S3_ACCESS_KEY_ID ?? process.env.AWS_ACCESS_KEY_ID;
    const secretAccessKey = process.env.FILERELAY_TEST_S3_SECRET_ACCESS_KEY ?? process.env.AWS_SECRET_ACCESS_KEY;
    if (!accessKeyId || !secretAccessKey)
      throw new Error(
        "FILERELAY_TEST_S3_ENDPOINT is set: also set FILERELAY_TEST_S3_ACCESS_KEY_ID and FILERELAY_TEST_S3_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)",
      );
    return remoteStore({
      kind: "external",
      endpoint: external,
      region: process.env.FILERELAY_TEST_S3_REGION ?? "us-east-1",
      accessKeyId,
      secretAccessKey,
      bucket,
      dispose: () => Promise.resolve(),
    });
  }
  if (process.env.FILERELAY_TEST_DOCKER === "1") return minioStore(bucket);
  return s3rverStore(bucket);
}

interface StoreCore {
  kind: S3Server["kind"];
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  bucket: string;
}

function storeHelpers(core: StoreCore) {
  let cached: S3Client | undefined;
  const client = (): S3Client => {
    cached ??= new s3sdk.S3Client({
      endpoint: core.endpoint,
      region: core.region,
      forcePathStyle: true,
      credentials: { accessKeyId: core.accessKeyId, secretAccessKey: core.secretAccessKey },
      // s3rver stores aws-chunked framing as object bytes otherwise.
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      maxAttempts: 2,
    });
    return cached;
  };
  const listKeys = async (prefix = ""): Promise<string[]> => {
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const page = await client().send(
        new s3sdk.ListObjectsV2Command({ Bucket: core.bucket, Prefix: prefix, ContinuationToken: token }),
      );
      for (const o of page.Contents ?? []) if (o.Key !== undefined) keys.push(o.Key);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return keys.sort();
  };
  const describe = async (key: string): Promise<StoredObject | undefined> => {
    let res: S3Sdk.GetObjectCommandOutput;
    try {
      res = await client().send(new s3sdk.GetObjectCommand({ Bucket: core.bucket, Key: key }));
    } catch (err) {
      if (err instanceof Error && (err.name === "NoSuchKey" || err.name === "NotFound")) return undefined;
      throw err;
    }
    const hash = createHash("sha256");
    let size = 0;
    for await (const chunk of res.Body as Readable) {
      const buf = chunk as Buffer;
      size += buf.length;
      hash.update(buf);
    }
    return { key, size, sha256: hash.digest("hex"), contentType: res.ContentType, metadata: res.Metadata ?? {} };
  };
  const createBucket = async (name: string): Promise<void> => {
    try {
      await client().send(new s3sdk.CreateBucketCommand({ Bucket: name }));
    } catch (err) {
      if (!(err instanceof Error && /BucketAlreadyOwnedByYou|BucketAlreadyExists/.test(err.name))) throw err;
    }
  };
  const emptyAndDeleteBucket = async (): Promise<void> => {
    for (const key of await listKeys()) {
      await client().send(new s3sdk.DeleteObjectCommand({ Bucket: core.bucket, Key: key }));
    }
    await client().send(new s3sdk.DeleteBucketCommand({ Bucket: core.bucket }));
  };
  const env = (): Record<string, string> => ({
    S3_ENDPOINT: core.endpoint,
    S3_REGION: core.region,
    S3_FORCE_PATH_STYLE: "true",
    S3_BUCKET: core.bucket,
    AWS_ACCESS_KEY_ID: core.accessKeyId,
    AWS_SECRET_ACCESS_KEY: core.secretAccessKey,
  });
  return {
    client,
    listKeys,
    describe,
    createBucket,
    emptyAndDeleteBucket,
    env,
    destroyClient: () => cached?.destroy(),
  };
}

function notControllable(what: string): () => Promise<void> {
  return () => Promise.reject(new Error(`${what} needs the s3rver started by the test harness`));
}

async function remoteStore(core: StoreCore & { dispose: () => Promise<void> }): Promise<S3Server> {
  const h = storeHelpers(core);
  await h.createBucket(core.bucket);
  return {
    ...core,
    forcePathStyle: true,
    controllable: false,
    env: h.env,
    client: h.client,
    createBucket: h.createBucket,
    listKeys: h.listKeys,
    describe: h.describe,
    stop: notControllable("stop()"),
    restart: notControllable("restart()"),
    output: () => "",
    [Symbol.asyncDispose]: async () => {
      // Leave an explicitly named bucket on a shared store alone; remove our own.
      await h.emptyAndDeleteBucket().catch(() => undefined);
      h.destroyClient();
      await core.dispose();
    },
  };
}

async function minioStore(bucket: string): Promise<S3Server> {
  // @testcontainers/minio is not a dependency; the generic container does the same job.
  const { GenericContainer, Wait } = await import("testcontainers");
  const accessKeyId = "filerelay";
  const secretAccessKey = randomBytes(12).toString("hex");
  const container = await new GenericContainer("minio/minio:latest")
    .withCommand(["server", "/data"])
    .withEnvironment({ MINIO_ROOT_USER: accessKeyId, MINIO_ROOT_PASSWORD: secretAccessKey })
    .withExposedPorts(9000)
    .withWaitStrategy(Wait.forHttp("/minio/health/live", 9000))
    .start();
  return remoteStore({
    kind: "minio",
    endpoint: `http://${container.getHost()}:${container.getMappedPort(9000)}`,
    region: "us-east-1",
    accessKeyId,
    secretAccessKey,
    bucket,
    dispose: async () => {
      await container.stop();
    },
  });
}

/**
 * A TCP relay in front of a store, so tests can take the endpoint away (every
 * connection dropped, new ones refused) without crashing the store itself.
 */
function createRelay(listenPort: number, targetPort: number) {
  const sockets = new Set<Socket>();
  let server: Server | undefined;
  const track = (s: Socket) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  };
  const open = () =>
    new Promise<void>((resolve, reject) => {
      const srv = createServer((downstream) => {
        const upstream = connect(targetPort, "127.0.0.1");
        track(downstream);
        track(upstream);
        downstream.on("error", () => upstream.destroy());
        upstream.on("error", () => downstream.destroy());
        downstream.pipe(upstream).pipe(downstream);
      });
      srv.once("error", reject);
      srv.listen(listenPort, "127.0.0.1", () => resolve());
      server = srv;
    });
  const cut = async () => {
    const srv = server;
    server = undefined;
    if (!srv) return;
    const closed = new Promise<void>((resolve) => srv.close(() => resolve()));
    for (const s of sockets) s.destroy();
    await closed;
  };
  return { open, cut };
}

async function s3rverStore(bucket: string): Promise<S3Server> {
  const port = await freePort();
  const innerPort = await freePort();
  const dataDir = await mkdtemp(join(tmpdir(), "filerelay-s3rver-"));
  const endpoint = `http://127.0.0.1:${port}`;
  const core: StoreCore = { kind: "s3rver", endpoint, region: "us-east-1", ...S3RVER_CREDENTIALS, bucket };
  const h = storeHelpers(core);
  const relay = createRelay(port, innerPort);
  let child: ChildProcess | undefined;
  let lines: string[] = [];

  const launch = async (): Promise<void> => {
    const args = [S3RVER_BIN, "-d", dataDir, "-a", "127.0.0.1", "-p", String(innerPort), "-s"];
    args.push("--configure-bucket", bucket);
    const proc = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
    guardChild(proc);
    const collect = (chunk: Buffer) => {
      lines.push(...chunk.toString("utf8").split("\n").filter(Boolean));
      if (lines.length > 400) lines = lines.slice(-200);
    };
    proc.stdout?.on("data", collect);
    proc.stderr?.on("data", collect);
    child = proc;
    await waitFor(
      async () => {
        if (proc.exitCode !== null)
          throw new Error(`s3rver exited with ${proc.exitCode}: ${lines.slice(-5).join(" | ")}`);
        // Any HTTP answer means it listens (the root answers 403 without a signature).
        const res = await fetch(`http://127.0.0.1:${innerPort}/`);
        return res.status > 0;
      },
      { timeoutMs: 20_000, message: `s3rver on port ${innerPort} to answer` },
    );
  };
  const running = () => child !== undefined && child.exitCode === null && child.signalCode === null;
  const kill = async (): Promise<void> => {
    const proc = child;
    if (!proc || !running()) return;
    proc.kill("SIGKILL");
    await waitForExit(proc, 10_000);
  };
  await launch();
  await relay.open();

  return {
    ...core,
    forcePathStyle: true,
    controllable: true,
    env: h.env,
    client: h.client,
    createBucket: h.createBucket,
    listKeys: h.listKeys,
    describe: h.describe,
    // The network goes, the store stays: s3rver's filesystem store is not crash-atomic (a
    // SIGKILL inside CompleteMultipartUpload leaves a partial object under the key), which
    // no real S3 store does, so killing it would test s3rver rather than the sink.
    stop: () => relay.cut(),
    restart: async () => {
      await relay.cut();
      if (!running()) await launch();
      await relay.open();
    },
    output: () => lines.join("\n"),
    [Symbol.asyncDispose]: async () => {
      h.destroyClient();
      await relay.cut();
      await kill();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------------------
// Payloads for sink tests: deterministic pseudo-random bytes generated as a
// stream (AES-CTR keystream), so a 50 MiB file is never held in memory.

export interface TestPayload {
  size: number;
  sha256: string;
  /** A fresh stream of the bytes; `onChunk` sees the running total after each chunk. */
  open(onChunk?: (producedBytes: number) => void): Readable;
}

const PAYLOAD_CHUNK = 1024 * 1024;

function* payloadChunks(size: number, seed: string): Generator<Buffer> {
  const key = createHash("sha256").update(seed).digest().subarray(0, 16);
  const cipher = createCipheriv("aes-128-ctr", key, Buffer.alloc(16));
  const zeros = Buffer.alloc(PAYLOAD_CHUNK);
  for (let left = size; left > 0; left -= PAYLOAD_CHUNK) {
    yield cipher.update(left >= PAYLOAD_CHUNK ? zeros : zeros.subarray(0, left));
  }
}

export function testPayload(size: number, seed: string): TestPayload {
  const hash = createHash("sha256");
  for (const chunk of payloadChunks(size, seed)) hash.update(chunk);
  const sha256 = hash.digest("hex");
  return {
    size,
    sha256,
    open: (onChunk) => {
      let produced = 0;
      return Readable.from(
        (function* () {
          for (const chunk of payloadChunks(size, seed)) {
            produced += chunk.length;
            onChunk?.(produced);
            yield chunk;
          }
        })(),
        { objectMode: false, highWaterMark: PAYLOAD_CHUNK },
      );
    },
  };
}

/** A valid envelope for `payload` (fresh id unless given). */
export function testEnvelope(
  payload: { size: number; sha256: string },
  fields: Partial<Omit<Envelope, "size" | "sha256">> = {},
): Envelope {
  const filename = fields.filename ?? "report.csv";
  return {
    id: randomUUID(),
    source: "api",
    type: "io.filerelay.file.v1",
    time: new Date(),
    subject: filename,
    contentType: "text/csv",
    filename,
    mtime: new Date(),
    payload: { kind: "inline" },
    ...fields,
    size: payload.size,
    sha256: payload.sha256,
  };
}

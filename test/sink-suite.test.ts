import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, sep } from "node:path";
import { pipeline } from "node:stream/promises";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { FilerelayError, silentLogger, type Envelope } from "@filerelay/core";
import { createFsSink } from "../packages/producer/src/sinks/fs/index.js";
import { createS3Sink } from "../packages/producer/src/sinks/s3/index.js";
import type { Sink, SinkWriteRequest, SinkWriteResult } from "../packages/producer/src/sinks/sink.js";
import { startS3, testEnvelope, testPayload, type S3Server, type TestPayload } from "./support/index.js";

/**
 * One suite, every sink: the same cases run against the filesystem sink and
 * the S3 sink (s3rver by default; MinIO/AWS via FILERELAY_TEST_S3_ENDPOINT or
 * FILERELAY_TEST_DOCKER=1), written only against the Sink interface.
 */

type ConflictMode = "rename" | "overwrite" | "skip" | "fail";
const MiB = 1024 * 1024;

interface SinkTarget {
  /** A sink writing into a fresh root (directory / prefix). */
  create(onConflict: ConflictMode): Promise<Sink>;
  /** Bytes stored at a result location (undefined if none). */
  inspect(location: string): Promise<{ size: number; sha256: string } | undefined>;
  /** Where `path` lands for the sink last created. */
  locationOf(path: string): string;
  /** Everything stored under the last root, as locations. */
  listRoot(): Promise<string[]>;
  /** Everything the test can see that is NOT under the last root (earlier roots included). */
  listOutsideRoot(): Promise<string[]>;
  dispose(): Promise<void>;
}

async function hashFile(path: string): Promise<{ size: number; sha256: string } | undefined> {
  try {
    const st = await stat(path);
    const hash = createHash("sha256");
    await pipeline(createReadStream(path), hash);
    return { size: st.size, sha256: hash.digest("hex") };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await walk(full)));
    else out.push(full);
  }
  return out.sort();
}

async function fsTarget(): Promise<SinkTarget> {
  // Roots are children of one parent, so "outside the root" is observable.
  const parent = await mkdtemp(join(tmpdir(), "filerelay-sink-suite-"));
  let n = 0;
  let root = "";
  return {
    create: (onConflict) => {
      root = join(parent, `out${++n}`);
      const sink = createFsSink(
        { OUTPUT_DIR: root, ON_CONFLICT: onConflict, CHUNK_SIZE: 65_536, FSYNC_EVERY_CHUNKS: 10, FILE_MODE: 0o640 },
        { log: silentLogger() },
      );
      return sink.init().then(() => sink);
    },
    inspect: hashFile,
    locationOf: (path) => join(root, ...path.split("/")),
    listRoot: () => walk(root),
    listOutsideRoot: async () => (await walk(parent)).filter((f) => !f.startsWith(root + sep)),
    dispose: () => rm(parent, { recursive: true, force: true }),
  };
}

async function s3Target(): Promise<SinkTarget> {
  const s3: S3Server = await startS3();
  let n = 0;
  let prefix = "";
  const keyOf = (location: string): string => {
    const head = `s3://${s3.bucket}/`;
    expect(location.startsWith(head), `${location} is in bucket ${s3.bucket}`).toBe(true);
    return location.slice(head.length);
  };
  return {
    create: async (onConflict) => {
      prefix = `suite-${++n}/in/`;
      const sink = createS3Sink(
        {
          S3_BUCKET: s3.bucket,
          S3_PREFIX: prefix,
          S3_ENDPOINT: s3.endpoint,
          S3_REGION: s3.region,
          S3_FORCE_PATH_STYLE: true,
          // Small parts: the 50 MiB case becomes a 10-part multipart upload.
          S3_PART_SIZE: 5 * MiB,
          S3_QUEUE_SIZE: 2,
          ON_CONFLICT: onConflict,
        },
        { log: silentLogger(), credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } },
      );
      await sink.init();
      return sink;
    },
    inspect: async (location) => {
      const obj = await s3.describe(keyOf(location));
      return obj && { size: obj.size, sha256: obj.sha256 };
    },
    locationOf: (path) => `s3://${s3.bucket}/${prefix}${path}`,
    listRoot: async () => (await s3.listKeys(prefix)).map((k) => `s3://${s3.bucket}/${k}`),
    listOutsideRoot: async () => (await s3.listKeys()).filter((k) => !k.startsWith(prefix)),
    dispose: async () => {
      await s3[Symbol.asyncDispose]();
    },
  };
}

function request(
  envelope: Envelope,
  payload: TestPayload,
  path: string,
  hooks: { onChunk?: (bytes: number) => void; onProgress?: () => void } = {},
): SinkWriteRequest {
  return {
    envelope,
    path,
    open: () => payload.open(hooks.onChunk),
    progress: () => hooks.onProgress?.(),
    signal: new AbortController().signal,
    log: silentLogger(),
  };
}

async function rejection(p: Promise<unknown>): Promise<FilerelayError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, "the write must fail").toBeInstanceOf(FilerelayError);
  return err as FilerelayError;
}

const targets: [string, () => Promise<SinkTarget>][] = [
  ["fs", fsTarget],
  ["s3", s3Target],
];

describe.each(targets)("sink suite: %s", (_name, makeTarget) => {
  let target: SinkTarget;
  beforeAll(async () => {
    target = await makeTarget();
  });
  afterAll(async () => {
    await target.dispose();
  });

  test("small file: written once at the organized path with the exact bytes", async () => {
    await using sink = await target.create("rename");
    const payload = testPayload(1234, "small");
    const result = await sink.write(request(testEnvelope(payload), payload, "2024/05/06/api-small.csv"));
    expect(result).toEqual({
      outcome: "written",
      location: target.locationOf("2024/05/06/api-small.csv"),
      bytes: 1234,
    });
    expect(await target.inspect(result.location)).toEqual({ size: 1234, sha256: payload.sha256 });
    expect(await target.listRoot()).toEqual([result.location]);
  });

  test("empty file", async () => {
    await using sink = await target.create("rename");
    const payload = testPayload(0, "empty");
    const result = await sink.write(request(testEnvelope(payload), payload, "empty.bin"));
    expect(result.outcome).toBe("written");
    expect(await target.inspect(result.location)).toEqual({ size: 0, sha256: payload.sha256 });
  });

  test("50 MiB file is streamed: progress is reported before the source is fully read", async () => {
    await using sink = await target.create("rename");
    const payload = testPayload(50 * MiB, "large");
    let produced = 0;
    let progressBeforeEnd = 0;
    let peakRss = 0;
    const rssBefore = process.memoryUsage.rss();
    const started = Date.now();
    const result = await sink.write(
      request(testEnvelope(payload, { contentType: "application/octet-stream" }), payload, "big/large.bin", {
        onChunk: (bytes) => {
          produced = bytes;
          peakRss = Math.max(peakRss, process.memoryUsage.rss());
        },
        onProgress: () => {
          if (produced < payload.size) progressBeforeEnd++;
        },
      }),
    );
    const ms = Date.now() - started;
    console.info(
      `${_name}: 50 MiB in ${ms} ms (${((50 / ms) * 1000).toFixed(0)} MiB/s), rss growth while streaming ≤ ${((peakRss - rssBefore) / MiB).toFixed(0)} MiB`,
    );
    expect(result).toMatchObject({ outcome: "written", bytes: payload.size });
    expect(progressBeforeEnd, "the sink made durable progress before reading the last byte").toBeGreaterThan(0);
    expect(await target.inspect(result.location)).toEqual({ size: payload.size, sha256: payload.sha256 });
  });

  test("redelivery: the same file version twice yields one output and outcome duplicate", async () => {
    await using sink = await target.create("rename");
    const payload = testPayload(4096, "redelivered");
    const envelope = testEnvelope(payload);
    const first = await sink.write(request(envelope, payload, "api-redelivered.csv"));
    const second = await sink.write(request(envelope, payload, "api-redelivered.csv"));
    expect(first.outcome).toBe("written");
    expect(second).toMatchObject({ outcome: "duplicate", location: first.location });
    expect(await target.listRoot()).toEqual([first.location]);
  });

  describe("conflicts: a different file at the same path", () => {
    const a = testPayload(1000, "conflict-a");
    const b = testPayload(2000, "conflict-b");
    const c = testPayload(3000, "conflict-c");
    const path = "same/report.csv";

    test("rename: -1, -2 before the extension; a redelivery finds its renamed copy", async () => {
      await using sink = await target.create("rename");
      const envB = testEnvelope(b);
      const ra = await sink.write(request(testEnvelope(a), a, path));
      const rb = await sink.write(request(envB, b, path));
      const rc = await sink.write(request(testEnvelope(c), c, path));
      const rbAgain = await sink.write(request(envB, b, path));
      expect([ra.location, rb.location, rc.location]).toEqual([
        target.locationOf(path),
        target.locationOf("same/report-1.csv"),
        target.locationOf("same/report-2.csv"),
      ]);
      expect(rbAgain).toMatchObject({ outcome: "duplicate", location: rb.location });
      expect(await target.inspect(ra.location)).toEqual({ size: a.size, sha256: a.sha256 });
      expect(await target.inspect(rb.location)).toEqual({ size: b.size, sha256: b.sha256 });
      expect(await target.inspect(rc.location)).toEqual({ size: c.size, sha256: c.sha256 });
      expect(await target.listRoot()).toHaveLength(3);
    });

    test("overwrite: the path holds the newer file", async () => {
      await using sink = await target.create("overwrite");
      await sink.write(request(testEnvelope(a), a, path));
      const rb = await sink.write(request(testEnvelope(b), b, path));
      expect(rb).toMatchObject({ outcome: "written", location: target.locationOf(path) });
      expect(await target.inspect(rb.location)).toEqual({ size: b.size, sha256: b.sha256 });
      expect(await target.listRoot()).toEqual([rb.location]);
    });

    test("skip: outcome skipped, the first file stays", async () => {
      await using sink = await target.create("skip");
      const ra = await sink.write(request(testEnvelope(a), a, path));
      const rb = await sink.write(request(testEnvelope(b), b, path));
      expect(rb).toMatchObject({ outcome: "skipped", location: ra.location, bytes: 0 });
      expect(await target.inspect(ra.location)).toEqual({ size: a.size, sha256: a.sha256 });
      expect(await target.listRoot()).toEqual([ra.location]);
    });

    test("fail: a permanent CONFLICT error, the first file stays", async () => {
      await using sink = await target.create("fail");
      const ra = await sink.write(request(testEnvelope(a), a, path));
      const err = await rejection(sink.write(request(testEnvelope(b), b, path)));
      expect(err.code).toBe("CONFLICT");
      expect(err.permanent).toBe(true);
      expect(await target.inspect(ra.location)).toEqual({ size: a.size, sha256: a.sha256 });
      expect(await target.listRoot()).toEqual([ra.location]);
    });
  });

  test("hostile paths never write outside the root; unusual but safe names are kept", async () => {
    await using sink = await target.create("rename");
    const outsideBefore = await target.listOutsideRoot();
    const hostile = [
      "../escape.csv",
      "a/../../escape.csv",
      "/etc/passwd",
      "a//b.csv",
      "./dot.csv",
      "a\\..\\..\\escape.csv",
      "nul\0byte.csv",
      "..",
    ];
    for (const path of hostile) {
      const payload = testPayload(10, `hostile ${path}`);
      const outcome = await sink.write(request(testEnvelope(payload), payload, path)).then(
        (r: SinkWriteResult) => r,
        (e: unknown) => e,
      );
      if (outcome instanceof Error) {
        // Refusing is fine, but it must be permanent: retrying a bad path cannot help.
        expect(outcome, path).toBeInstanceOf(FilerelayError);
        expect((outcome as FilerelayError).permanent, path).toBe(true);
      } else {
        expect(await target.listRoot(), `${path} landed inside the root`).toContain(
          (outcome as SinkWriteResult).location,
        );
      }
    }
    const unicode = testPayload(77, "unicode");
    const safePath = "données/été 2024 ✓ (copie) #1.csv";
    const r = await sink.write(
      request(testEnvelope(unicode, { filename: "été 2024 ✓ (copie) #1.csv" }), unicode, safePath),
    );
    expect(r.location).toBe(target.locationOf(safePath));
    expect(await target.inspect(r.location)).toEqual({ size: 77, sha256: unicode.sha256 });
    expect(await target.listOutsideRoot()).toEqual(outsideBefore);
  });
});

import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import {
  ConfigError,
  isEnvironmental,
  openPayload,
  PayloadError,
  silentLogger,
  SinkError,
  type Envelope,
} from "@filerelay/core";
import type { ConflictMode } from "../../config.js";
import {
  classifyWriteError,
  createFsSink,
  isTempFileName,
  staleTempVerdict,
  tempFileName,
  type FsSinkOptions,
} from "./index.js";
import type { Sink, SinkWriteRequest } from "../sink.js";

const log = silentLogger();
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
let root: string;
let ids = 0;

const envelopeFor = (content: Buffer, over: Partial<Envelope> = {}): Envelope => ({
  id: `00000000-0000-4000-8000-${String(++ids).padStart(12, "0")}`,
  source: "t",
  type: "io.filerelay.file.v1",
  time: new Date(),
  subject: "f.bin",
  contentType: "application/octet-stream",
  filename: "f.bin",
  size: content.length,
  sha256: sha(content),
  mtime: new Date(),
  payload: { kind: "inline" },
  ...over,
});

/** A request whose payload arrives in uneven pieces, as from the network. */
function request(path: string, content: Buffer, envelope = envelopeFor(content), pieces = 7777) {
  let progress = 0;
  const req: SinkWriteRequest = {
    envelope,
    path,
    open: () =>
      Readable.from(
        (function* () {
          for (let off = 0; off < content.length; off += pieces) yield content.subarray(off, off + pieces);
        })(),
      ),
    progress: () => void progress++,
    signal: new AbortController().signal,
    log,
  };
  return { req, progress: () => progress };
}

const sinkWith = (over: Partial<FsSinkOptions> = {}): Sink =>
  createFsSink(
    { OUTPUT_DIR: root, ON_CONFLICT: "rename", CHUNK_SIZE: 4096, FSYNC_EVERY_CHUNKS: 3, FILE_MODE: 0o640, ...over },
    { log },
  );

async function listAll(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(dir.length + 1))
    .sort();
}

const failure = async (p: Promise<unknown>) => {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeDefined();
  return err as SinkError;
};

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "fssink-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("fs sink", () => {
  it("streams a multi-chunk file into place with FILE_MODE and no temp file left", async () => {
    await using sink = sinkWith({ FILE_MODE: 0o604 });
    await sink.init();
    const content = Buffer.alloc(10 * 1024 * 1024 + 123);
    for (let i = 0; i < content.length; i++) content[i] = (i * 31) & 0xff;
    const { req, progress } = request("2024/01/02/a.bin", content);
    const res = await sink.write(req);
    expect(res).toEqual({ outcome: "written", location: join(root, "2024/01/02/a.bin"), bytes: content.length });
    expect(sha(await readFile(res.location))).toBe(sha(content));
    expect((await stat(res.location)).mode & 0o777).toBe(0o604);
    expect(progress()).toBeGreaterThanOrEqual(2);
    expect(await listAll(root)).toEqual(["2024/01/02/a.bin"]);
  });

  it("writes the exact bytes whatever the payload's piece sizes against CHUNK_SIZE and the fsync interval", async () => {
    const content = Buffer.alloc(1024 * 1024 + 4321);
    for (let i = 0; i < content.length; i++) content[i] = (i * 131 + (i >> 11)) & 0xff;
    // CHUNK_SIZE 4096 × FSYNC_EVERY_CHUNKS 3: an fsync boundary every 12,288 bytes.
    for (const every of [3, 1, 0]) {
      await using sink = sinkWith({ FSYNC_EVERY_CHUNKS: every });
      for (const pieces of [1000, 4095, 4096, 4097, 12_288, 12_289, 50_000, 1024 * 1024]) {
        const small = pieces < 4096 ? content.subarray(0, 100_007) : content;
        const res = await sink.write(request(`p/${every}-${pieces}.bin`, small, undefined, pieces).req);
        expect(res.outcome).toBe("written");
        expect(sha(await readFile(res.location))).toBe(sha(small));
      }
    }
    expect((await listAll(root)).filter((n) => isTempFileName(n))).toEqual([]);
  }, 60_000);

  it("writes empty files", async () => {
    await using sink = sinkWith();
    const res = await sink.write(request("empty", Buffer.alloc(0)).req);
    expect(res.outcome).toBe("written");
    expect((await stat(res.location)).size).toBe(0);
  });

  it("treats an identical existing file as a redelivery: no second copy", async () => {
    await using sink = sinkWith();
    const content = Buffer.from("same bytes");
    const env = envelopeFor(content);
    expect((await sink.write(request("x.txt", content, env).req)).outcome).toBe("written");
    const again = await sink.write(request("x.txt", content, env).req);
    expect(again).toEqual({ outcome: "duplicate", location: join(root, "x.txt"), bytes: content.length });
    expect(await listAll(root)).toEqual(["x.txt"]);
  });

  describe("ON_CONFLICT with two same-named files", () => {
    const first = Buffer.from("first version\n");
    const second = Buffer.from("second, different version\n");
    const third = Buffer.from("third\n");

    const run = async (mode: ConflictMode) => {
      const sink = sinkWith({ ON_CONFLICT: mode });
      await sink.write(request("d/report.csv", first).req);
      return { sink, second: sink.write(request("d/report.csv", second).req) };
    };

    it("rename: suffix before the extension; a redelivery finds its suffixed copy", async () => {
      const { sink, second: p } = await run("rename");
      const res = await p;
      expect(res.outcome).toBe("written");
      expect(res.location).toBe(join(root, "d/report-1.csv"));
      const env3 = envelopeFor(third);
      expect((await sink.write(request("d/report.csv", third, env3).req)).location).toBe(join(root, "d/report-2.csv"));
      const redelivered = await sink.write(request("d/report.csv", third, env3).req);
      expect(redelivered).toMatchObject({ outcome: "duplicate", location: join(root, "d/report-2.csv") });
      expect(await listAll(root)).toEqual(["d/report-1.csv", "d/report-2.csv", "d/report.csv"]);
      expect(await readFile(join(root, "d/report.csv"))).toEqual(first);
      expect(await readFile(join(root, "d/report-1.csv"))).toEqual(second);
      expect(await readFile(join(root, "d/report-2.csv"))).toEqual(third);
    });

    it("overwrite: replaces atomically", async () => {
      const { second: p } = await run("overwrite");
      expect(await p).toMatchObject({ outcome: "written", location: join(root, "d/report.csv") });
      expect(await readFile(join(root, "d/report.csv"))).toEqual(second);
      expect(await listAll(root)).toEqual(["d/report.csv"]);
    });

    it("skip: keeps the first, reports skipped", async () => {
      const { second: p } = await run("skip");
      expect(await p).toMatchObject({ outcome: "skipped", location: join(root, "d/report.csv") });
      expect(await readFile(join(root, "d/report.csv"))).toEqual(first);
      expect(await listAll(root)).toEqual(["d/report.csv"]);
    });

    it("fail: permanent CONFLICT, first kept", async () => {
      const { second: p } = await run("fail");
      const err = await failure(p);
      expect(err).toBeInstanceOf(SinkError);
      expect(err.code).toBe("CONFLICT");
      expect(err.permanent).toBe(true);
      expect(await readFile(join(root, "d/report.csv"))).toEqual(first);
      expect(await listAll(root)).toEqual(["d/report.csv"]);
    });
  });

  it("checksum mismatch: permanent CHECKSUM_MISMATCH, temp removed, nothing under the final name", async () => {
    await using sink = sinkWith();
    const content = Buffer.alloc(100_000, 7);
    const env = envelopeFor(content, { sha256: "a".repeat(64) });
    const err = await failure(sink.write(request("bad.bin", content, env).req));
    expect(err.code).toBe("CHECKSUM_MISMATCH");
    expect(err.permanent).toBe(true);
    expect(await listAll(root)).toEqual([]);
  });

  it("a core payload stream is trusted for its own envelope only; a lying one fails before anything is placed", async () => {
    await using sink = sinkWith();
    const content = Buffer.alloc(300_000, 9);
    const env = envelopeFor(content);
    const viaCore = (e: Envelope): SinkWriteRequest => ({
      ...request("core.bin", content, e).req,
      open: () => openPayload({} as Parameters<typeof openPayload>[0], e, content),
    });
    const ok = await sink.write(viaCore(env));
    expect(ok.outcome).toBe("written");
    expect(sha(await readFile(ok.location))).toBe(sha(content));
    const lying = { ...env, id: "00000000-0000-4000-8000-00000000ffff", sha256: "b".repeat(64) };
    const err = await failure(sink.write({ ...viaCore(lying), path: "core2.bin" }));
    expect(err.code).toBe("PAYLOAD_DIGEST_MISMATCH");
    expect(await listAll(root)).toEqual(["core.bin"]);
  });

  it("a failing payload stream: its FilerelayError is kept, others become transient WRITE_FAILED; temp removed", async () => {
    await using sink = sinkWith();
    const content = Buffer.alloc(50_000, 1);
    const failing = (err: Error) => {
      const { req } = request("broken.bin", content);
      req.open = () =>
        Readable.from(
          (function* () {
            yield content.subarray(0, 20_000);
            throw err;
          })(),
        );
      return req;
    };
    const digest = await failure(sink.write(failing(new PayloadError("PAYLOAD_DIGEST_MISMATCH", "digest differs"))));
    expect(digest.code).toBe("PAYLOAD_DIGEST_MISMATCH");
    const io = await failure(sink.write(failing(new Error("ECONNRESET"))));
    expect(io.code).toBe("WRITE_FAILED");
    expect(io.permanent).toBe(false);
    expect(await listAll(root)).toEqual([]);
  });

  it("an OUTPUT_DIR under a regular file: init() refuses it as configuration (exit 78), naming OUTPUT_DIR", async () => {
    await writeFile(join(root, "file"), "x");
    await using sink = sinkWith({ OUTPUT_DIR: join(root, "file", "out") });
    const err = await failure(sink.init());
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as unknown as ConfigError).problems).toEqual([
      `OUTPUT_DIR: ${join(root, "file", "out")} is not a directory (or a component of its path is a file)`,
    ]);
  });

  it("an OUTPUT_DIR that becomes unusable after start: an outage (OUTPUT_NOT_WRITABLE, retried), not ready until a write succeeds", async () => {
    const out = join(root, "out");
    await using sink = sinkWith({ OUTPUT_DIR: out });
    await sink.init();
    await sink.checkReady();
    await rm(out, { recursive: true });
    await writeFile(out, "now a file");
    await expect(sink.checkReady()).rejects.toThrow(/OUTPUT_DIR .*out is not a directory/);
    const err = await failure(sink.write(request("a.txt", Buffer.from("a")).req));
    expect([err.code, err.permanent]).toEqual(["OUTPUT_NOT_WRITABLE", false]);
    expect(isEnvironmental(err)).toBe(true);
    expect(err.message).toMatch(/OUTPUT_DIR .*out is not a directory/);
    await rm(out);
    await mkdir(out);
    // OUTPUT_DIR is back, but the last write failed: not ready until one succeeds.
    await expect(sink.checkReady()).rejects.toThrow(/OUTPUT_DIR/);
    expect((await sink.write(request("a.txt", Buffer.from("a")).req)).outcome).toBe("written");
    await sink.checkReady();
  });

  it("refuses to follow a symlinked directory out of OUTPUT_DIR", async () => {
    const outside = await mkdtemp(join(tmpdir(), "fssink-outside-"));
    try {
      await symlink(outside, join(root, "escape"));
      await using sink = sinkWith();
      const err = await failure(sink.write(request("escape/x.txt", Buffer.from("x")).req));
      expect(err.code).toBe("PATH_UNSAFE");
      expect(await readdir(outside)).toEqual([]);
    } finally {
      await rm(outside, { recursive: true, force: true });
    }
  });

  it("creates nothing outside OUTPUT_DIR through a symlinked date directory: refused before any mkdir", async () => {
    const outside = await mkdtemp(join(tmpdir(), "fssink-outside-"));
    try {
      await symlink(outside, join(root, "2026"));
      await mkdir(join(root, "inner"));
      await symlink(join(root, "inner"), join(root, "2027"));
      await using sink = sinkWith();
      const err = await failure(sink.write(request("2026/05/01/x.txt", Buffer.from("x")).req));
      expect([err.code, err.permanent]).toEqual(["PATH_UNSAFE", true]);
      expect(err.message).toContain(`${join(root, "2026")} resolves to`);
      expect(await readdir(outside)).toEqual([]);
      // A link that stays inside OUTPUT_DIR is followed, and directories are made below it as usual.
      const ok = await sink.write(request("2027/05/01/y.txt", Buffer.from("y")).req);
      expect(ok.outcome).toBe("written");
      expect(await readFile(join(root, "inner/05/01/y.txt"), "utf8")).toBe("y");
    } finally {
      await rm(outside, { recursive: true, force: true });
    }
  });

  it("names temp files by a per-sink instance id and a counter; the older host/pid names still match", () => {
    const id = "11111111-2222-4333-8444-555555555555";
    const instance = "0123456789abcdef";
    expect([35, 36].map((n) => tempFileName(id, instance, n))).toEqual([
      `.filerelay-${id}.${instance}.z.tmp`,
      `.filerelay-${id}.${instance}.10.tmp`,
    ]);
    expect(isTempFileName(tempFileName(id, instance, 1))).toBe(true);
    expect(isTempFileName(`.filerelay-${id}.host-1.1234.9f3a2b1c.tmp`)).toBe(true);
    expect(isTempFileName(`filerelay-${id}.${instance}.1.tmp`)).toBe(false);
  });

  it("decides a temp file's fate by how long it has been untouched, never by pid or hostname", () => {
    const base = { self: "a".repeat(16), tempTtlMs: 30_000, legacyStaleMs: 3_600_000 };
    const verdict = (owner: string | undefined, tempAgeMs: number) => staleTempVerdict({ ...base, owner, tempAgeMs });
    const peer = "b".repeat(16);
    expect(verdict(peer, 30_001)).toBe("remove");
    // Touched recently: a live writer, or one that crashed moments ago: judged again later.
    expect(verdict(peer, 29_000)).toBe("later");
    // Our own are never swept.
    expect(verdict(base.self, 3_600_000)).toBe("keep");
    // The older names (their writers do not touch them): by the old, long bound only.
    expect(verdict(undefined, 3_600_001)).toBe("remove");
    expect(verdict(undefined, 60_000)).toBe("keep");
  });

  it("init removes temp files of gone writers, those of a just-crashed one once stale, never a live writer's", async () => {
    const id = "11111111-2222-4333-8444-555555555555";
    await mkdir(join(root, "2024/01/01"), { recursive: true });
    const gone = join(root, "2024/01/01", tempFileName(id, "0a".repeat(8), 1));
    const crashed = join(root, tempFileName(id, "0b".repeat(8), 1));
    const oldLegacy = join(root, `.filerelay-${id}.otherhost.1.0a1b2c3d.tmp`);
    const youngLegacy = join(root, `.filerelay-${id}.otherhost.1.0a1b2c3e.tmp`);
    const keep = join(root, "2024/01/01/real.txt");
    for (const f of [gone, crashed, oldLegacy, youngLegacy, keep]) await writeFile(f, "x");
    const ago = (ms: number) => new Date(Date.now() - ms);
    await utimes(gone, ago(60_000), ago(60_000));
    await utimes(oldLegacy, ago(2 * 3600_000), ago(2 * 3600_000));

    const fast = { log, tempTtlMs: 600, tempTouchMs: 100 };
    const options = {
      OUTPUT_DIR: root,
      ON_CONFLICT: "rename",
      CHUNK_SIZE: 4096,
      FSYNC_EVERY_CHUNKS: 0,
      FILE_MODE: 0o640,
    };
    // A live writer whose payload stalls mid-file (no byte for longer than the TTL).
    await using writer = createFsSink({ ...options, ON_CONFLICT: "rename" }, fast);
    let resume!: () => void;
    const resumed = new Promise<void>((res) => {
      resume = res;
    });
    const content = Buffer.alloc(200_000, 4);
    const { req } = request("2024/01/01/slow.bin", content);
    req.open = () =>
      Readable.from(
        (async function* () {
          yield content.subarray(0, 100_000);
          await resumed;
          yield content.subarray(100_000);
        })(),
      );
    const writing = writer.write(req);
    const liveTemp = await vi.waitFor(async () => {
      const t = (await listAll(root)).find((n) => n.startsWith(`2024/01/01/.filerelay-${req.envelope.id}.`));
      expect(t).toBeDefined();
      return join(root, t!);
    });

    await using peer = createFsSink({ ...options, ON_CONFLICT: "rename" }, fast);
    await peer.init();
    const rel = (files: string[]) => files.map((f) => f.slice(root.length + 1)).sort();
    expect(await listAll(root)).toEqual(rel([crashed, liveTemp, youngLegacy, keep]));
    // Once the crashed writer's file has been untouched for the TTL, the peer's second look removes it;
    // the stalled live writer's file stays, kept fresh by its writer.
    await vi.waitFor(async () => expect(await listAll(root)).not.toContain(rel([crashed])[0]), { timeout: 5000 });
    expect(await listAll(root)).toEqual(rel([liveTemp, youngLegacy, keep]));
    resume();
    expect((await writing).outcome).toBe("written");
    expect(await listAll(root)).toEqual(rel([join(root, "2024/01/01/slow.bin"), youngLegacy, keep]));
  });

  it("classifies write errors: a full disk is DISK_SPACE_LOW, other I/O errors WRITE_FAILED", () => {
    const io = (code: string) => Object.assign(new Error(code), { code });
    expect(classifyWriteError(io("ENOSPC"), "w").code).toBe("DISK_SPACE_LOW");
    expect(classifyWriteError(io("EDQUOT"), "w").code).toBe("DISK_SPACE_LOW");
    const eio = classifyWriteError(io("EIO"), "writing x failed");
    expect([eio.code, eio.permanent, eio.message]).toEqual(["WRITE_FAILED", false, "writing x failed (EIO)"]);
    const refused = classifyWriteError(io("EACCES"), "writing x failed");
    expect([refused.code, refused.permanent]).toEqual(["OUTPUT_NOT_WRITABLE", false]);
    expect(classifyWriteError(io("EROFS"), "w").code).toBe("OUTPUT_NOT_WRITABLE");
    expect(classifyWriteError(io("EIO"), "w", "/out is not a directory").code).toBe("OUTPUT_NOT_WRITABLE");
    const conflict = new SinkError("CONFLICT", "c");
    expect(classifyWriteError(conflict, "w")).toBe(conflict);
  });
});

import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openPayload, PayloadError, silentLogger, SinkError, type Envelope } from "@filerelay/core";
import type { ConflictMode } from "../config.js";
import { classifyWriteError, createFsSink, isTempFileName, tempFileName, type FsSinkOptions } from "./fsSink.js";
import type { Sink, SinkWriteRequest } from "./sink.js";

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

  it("an OUTPUT_DIR under a regular file fails transiently (WRITE_FAILED) and is not ready", async () => {
    await writeFile(join(root, "file"), "x");
    await using sink = createFsSink(
      {
        OUTPUT_DIR: join(root, "file", "out"),
        ON_CONFLICT: "rename",
        CHUNK_SIZE: 4096,
        FSYNC_EVERY_CHUNKS: 1,
        FILE_MODE: 0o640,
      },
      { log },
    );
    await sink.init();
    await expect(sink.checkReady()).rejects.toThrow(/not a writable directory/);
    const err = await failure(sink.write(request("a.txt", Buffer.from("a")).req));
    expect(err.code).toBe("WRITE_FAILED");
    expect(err.permanent).toBe(false);
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

  it("init removes temp files of dead owners and old ones, keeps live peers' and other files", async () => {
    const id = "11111111-2222-4333-8444-555555555555";
    await mkdir(join(root, "2024/01/01"), { recursive: true });
    const deadOwner = join(root, "2024/01/01", tempFileName(id, 2 ** 22 + 12345)); // beyond pid_max
    const previousSelf = join(root, tempFileName(id, process.pid));
    const livePeer = join(root, "2024/01/01", tempFileName(id, process.ppid));
    const youngForeign = join(root, tempFileName(id, 1, "otherhost"));
    const oldForeign = join(root, tempFileName(id, 1, "otherhost"));
    const keep = join(root, "2024/01/01/real.txt");
    for (const f of [deadOwner, previousSelf, livePeer, youngForeign, oldForeign, keep]) await writeFile(f, "x");
    const twoHoursAgo = new Date(Date.now() - 2 * 3600_000);
    await utimes(oldForeign, twoHoursAgo, twoHoursAgo);
    expect([deadOwner, livePeer, oldForeign].every(isTempFileName)).toBe(true);

    await using sink = sinkWith();
    await sink.init();
    const left = await listAll(root);
    expect(left).toEqual([livePeer, youngForeign, keep].map((f) => f.slice(root.length + 1)).sort());
  });

  it("classifies write errors: a full disk is DISK_SPACE_LOW, other I/O errors WRITE_FAILED", () => {
    const io = (code: string) => Object.assign(new Error(code), { code });
    expect(classifyWriteError(io("ENOSPC"), "w").code).toBe("DISK_SPACE_LOW");
    expect(classifyWriteError(io("EDQUOT"), "w").code).toBe("DISK_SPACE_LOW");
    const eio = classifyWriteError(io("EIO"), "writing x failed");
    expect([eio.code, eio.permanent, eio.message]).toEqual(["WRITE_FAILED", false, "writing x failed (EIO)"]);
    const conflict = new SinkError("CONFLICT", "c");
    expect(classifyWriteError(conflict, "w")).toBe(conflict);
  });
});

import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FilerelayError, SinkError, silentLogger, type Envelope, type FileContext } from "@filerelay/core";
import { loadProducerConfig, type ProducerConfig } from "./config.js";
import { canEverFit, contentTypeAllowed, createFileHandler } from "./producer.js";
import { createFsSink } from "./sinks/fs/index.js";

const log = silentLogger();
let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "handler-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

function context(content: Buffer, over: Partial<Envelope> = {}): FileContext {
  const envelope: Envelope = {
    id: "6a1c9d2e-0b7f-4f3e-9c1a-2d3e4f5a6b7c",
    source: "api",
    type: "io.filerelay.file.v1",
    time: new Date(),
    subject: "x/data.csv",
    contentType: "text/csv",
    filename: "data.csv",
    size: content.length,
    sha256: createHash("sha256").update(content).digest("hex"),
    mtime: new Date(),
    payload: { kind: "inline" },
    ...over,
  };
  return {
    envelope,
    open: () => Readable.from([content]),
    deliveryCount: 1,
    log,
    working: () => undefined,
    signal: new AbortController().signal,
    headers: {},
  };
}

const config = (env: Record<string, string> = {}): Promise<ProducerConfig> =>
  loadProducerConfig({ OUTPUT_DIR: root, ORGANIZE_BY: "none", ...env }, { envFile: null });

const rejection = async (p: Promise<unknown>): Promise<FilerelayError> => {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(FilerelayError);
  return err as FilerelayError;
};

describe("file handler", () => {
  it("matches content types exactly, by major type wildcard, ignoring parameters and case", () => {
    expect(contentTypeAllowed("text/csv; charset=utf-8", ["text/csv"])).toBe(true);
    expect(contentTypeAllowed("TEXT/CSV", ["text/csv"])).toBe(true);
    expect(contentTypeAllowed("image/png", ["image/*"])).toBe(true);
    expect(contentTypeAllowed("image/png", ["*/*"])).toBe(true);
    expect(contentTypeAllowed("image/png", ["text/*", "image/jpeg"])).toBe(false);
    expect(contentTypeAllowed("imagex/png", ["image/*"])).toBe(false);
  });

  it("writes through the sink, validating size and content type first (permanent codes)", async () => {
    const cfg = await config({ MAX_FILE_SIZE: "10", ALLOWED_CONTENT_TYPES: "text/*" });
    await using sink = createFsSink(cfg, { log });
    const written: string[] = [];
    const handle = createFileHandler({ config: cfg, sink, onWritten: (_e, r) => written.push(r.location) });
    await handle(context(Buffer.from("a,b\n")));
    expect(written).toEqual([join(root, "data-6a1c9d2e.csv")]);

    const big = await rejection(handle(context(Buffer.alloc(11))));
    expect([big.code, big.permanent]).toEqual(["ENVELOPE_TOO_LARGE", true]);
    const png = await rejection(handle(context(Buffer.from("p"), { contentType: "image/png" })));
    expect([png.code, png.permanent]).toEqual(["CONTENT_TYPE_NOT_ALLOWED", true]);
  });

  it("requires DISK_SPACE_FACTOR × size free: otherwise a transient DISK_SPACE_LOW naming the numbers", async () => {
    const cfg = await config({ DISK_SPACE_FACTOR: "2.5" });
    await using sink = createFsSink(cfg, { log });
    let free = 1000;
    const handle = createFileHandler({ config: cfg, sink, freeSpace: () => Promise.resolve(free) });
    const err = await rejection(handle(context(Buffer.alloc(401))));
    expect(err.code).toBe("DISK_SPACE_LOW");
    expect(err.permanent).toBe(false);
    expect(err.message).toBe(`1000 bytes free on ${root}, need 1003 (DISK_SPACE_FACTOR 2.5 × 401 bytes)`);
    free = 1003;
    await handle(context(Buffer.alloc(401)));
  });

  it("a file larger than the whole output filesystem can never fit (unknown capacity: assumed to)", () => {
    expect(canEverFit(1001, 1000)).toBe(false);
    expect(canEverFit(1000, 1000)).toBe(true);
    expect(canEverFit(10, 1000)).toBe(true);
    expect(canEverFit(1001, 0)).toBe(true);
  });

  it("dead-letters (permanent FILE_EXCEEDS_DISK) a file larger than the filesystem instead of retrying it", async () => {
    const cfg = await config({ DISK_SPACE_FACTOR: "2" });
    await using sink = createFsSink(cfg, { log });
    const capacity = 1000;
    const handle = createFileHandler({
      config: cfg,
      sink,
      freeSpace: () => Promise.resolve(900),
      capacity: () => Promise.resolve(capacity),
    });
    const err = await rejection(handle(context(Buffer.alloc(1001))));
    expect([err.code, err.permanent]).toEqual(["FILE_EXCEEDS_DISK", true]);
    expect(err.message).toContain(
      `the file (1001 bytes) is larger than the whole filesystem of OUTPUT_DIR ${root} (1000 bytes)`,
    );
    expect(err.details).toEqual({ size: 1001, capacity, outputDir: root });
    // One that fits the filesystem but not its free space (or only not the margin) waits for space.
    const low = await rejection(handle(context(Buffer.alloc(600))));
    expect([low.code, low.permanent]).toEqual(["DISK_SPACE_LOW", false]);
  });

  it("with the pre-check off, a full disk met while writing is FILE_EXCEEDS_DISK when the file can never fit", async () => {
    const cfg = await config({ DISK_SPACE_FACTOR: "0" });
    const full = new SinkError("DISK_SPACE_LOW", "the output filesystem is full (ENOSPC)");
    const sink = {
      kind: "fs",
      init: () => Promise.resolve(),
      write: () => Promise.reject(full),
      checkReady: () => Promise.resolve(),
      close: () => Promise.resolve(),
      [Symbol.asyncDispose]: () => Promise.resolve(),
    };
    const handle = createFileHandler({ config: cfg, sink, capacity: () => Promise.resolve(100) });
    expect((await rejection(handle(context(Buffer.alloc(101))))).code).toBe("FILE_EXCEEDS_DISK");
    expect(await rejection(handle(context(Buffer.alloc(100))))).toBe(full);
  });

  it("checks real free space with statfs", async () => {
    const cfg = await config({ DISK_SPACE_FACTOR: "1000000000000" });
    await using sink = createFsSink(cfg, { log });
    const handle = createFileHandler({ config: cfg, sink });
    // 10 bytes × 1e12 = 10 TB: no test machine has that free.
    const err = await rejection(handle(context(Buffer.alloc(10))));
    expect(err.code).toBe("DISK_SPACE_LOW");
    expect(err.details.free).toBeGreaterThan(0);
    const ok = await config({ DISK_SPACE_FACTOR: "2" });
    await createFileHandler({ config: ok, sink })(context(Buffer.alloc(10)));
  });
});

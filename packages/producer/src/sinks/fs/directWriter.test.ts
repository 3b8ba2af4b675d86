import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { promisify } from "node:util";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { PayloadError, silentLogger, type Envelope, type SinkError } from "@filerelay/core";
import type { SinkWriteRequest } from "../sink.js";
import { STAGE_BYTES, StagePool } from "./alignedStages.js";
import { refuseDirectIo } from "./directWriter.js";
import { createFsSink } from "./index.js";

const digest = (b: Buffer) => createHash("sha256").update(b).digest("hex");
let root: string;
let seq = 0;

/** A write request whose payload arrives in `piece`-byte parts, as from the network. */
function writeOf(path: string, content: Buffer, piece: number, sha256 = digest(content)): SinkWriteRequest {
  const envelope: Envelope = {
    id: `00000000-0000-4000-8000-${String(++seq).padStart(12, "0")}`,
    source: "direct",
    type: "io.filerelay.file.v1",
    time: new Date(),
    subject: path,
    contentType: "application/octet-stream",
    filename: path,
    size: content.length,
    sha256,
    mtime: new Date(),
    payload: { kind: "inline" },
  };
  return {
    envelope,
    path,
    open: () =>
      Readable.from(
        (function* () {
          for (let off = 0; off < content.length; off += piece) yield content.subarray(off, off + piece);
        })(),
      ),
    progress: () => undefined,
    signal: new AbortController().signal,
    log: silentLogger(),
  };
}

/** Bytes of `file` held in the page cache (util-linux fincore). */
async function cachedBytes(file: string): Promise<number> {
  const { stdout } = await promisify(execFile)("fincore", ["--bytes", "--noheadings", "--output", "RES", file]);
  return Number(stdout.trim());
}

const sink = () =>
  createFsSink(
    {
      OUTPUT_DIR: root,
      ON_CONFLICT: "rename",
      CHUNK_SIZE: 4096,
      FSYNC_EVERY_CHUNKS: 3,
      // Every file past the small-file path goes direct here.
      DIRECT_IO_MIN_BYTES: 1,
      FILE_MODE: 0o604,
    },
    { log: silentLogger() },
  );

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "direct-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("fs sink, direct I/O (O_DIRECT) for large files", () => {
  it("writes the exact bytes past the page cache for every size against the 1 MiB stage and the 4 KiB block", async () => {
    await using fs = sink();
    await fs.init();
    const data = randomBytes(3 * STAGE_BYTES + 8192);
    const sizes = [65_537, STAGE_BYTES - 1, STAGE_BYTES, STAGE_BYTES + 1, STAGE_BYTES + 4096, 2 * STAGE_BYTES + 4095];
    for (const size of [...sizes, data.length]) {
      for (const piece of [7777, STAGE_BYTES, 3 * STAGE_BYTES]) {
        const content = data.subarray(0, size);
        const res = await fs.write(writeOf(`d/${size}-${piece}.bin`, content, piece));
        expect(res.outcome).toBe("written");
        // Only the last partial block went through the page cache.
        expect(await cachedBytes(res.location)).toBeLessThanOrEqual(4096);
        expect((await stat(res.location)).mode & 0o777).toBe(0o604);
        expect(digest(await readFile(res.location))).toBe(digest(content));
      }
    }
    expect(await readdir(join(root, "d"))).toHaveLength(3 * (sizes.length + 1));
  }, 60_000);

  it("a file system that refuses O_DIRECT gets the same bytes the ordinary way (through the page cache)", async () => {
    await using fs = sink();
    await fs.init();
    const allow = await refuseDirectIo(root);
    const content = randomBytes(2 * STAGE_BYTES + 123);
    const res = await fs.write(writeOf("refused.bin", content, 7777)).finally(allow);
    expect(res.outcome).toBe("written");
    expect(await cachedBytes(res.location)).toBeGreaterThan(STAGE_BYTES);
    expect(digest(await readFile(res.location))).toBe(digest(content));
  });

  it("bytes that do not match the envelope: CHECKSUM_MISMATCH, nothing placed, no temp file left", async () => {
    await using fs = sink();
    await fs.init();
    const content = randomBytes(STAGE_BYTES + 5000);
    const err = (await fs.write(writeOf("bad.bin", content, 7777, "c".repeat(64))).then(
      () => undefined,
      (e: unknown) => e,
    )) as SinkError | undefined;
    expect([err?.code, err?.permanent]).toEqual(["CHECKSUM_MISMATCH", true]);
    expect(await readdir(root, { recursive: true })).toEqual([]);
  });

  it("a payload stream failing mid-way: its error is kept, nothing placed, direct I/O stays on", async () => {
    await using fs = sink();
    await fs.init();
    const content = randomBytes(3 * STAGE_BYTES);
    const broken = writeOf("broken.bin", content, STAGE_BYTES);
    broken.open = () =>
      Readable.from(
        (function* () {
          yield content.subarray(0, 2 * STAGE_BYTES);
          throw new PayloadError("PAYLOAD_READ_FAILED", "broker went away");
        })(),
      );
    const err = (await fs.write(broken).then(
      () => undefined,
      (e: unknown) => e,
    )) as SinkError | undefined;
    expect(err?.code).toBe("PAYLOAD_READ_FAILED");
    expect(await readdir(root, { recursive: true })).toEqual([]);
    // The failure did not turn direct I/O off for this file system.
    const res = await fs.write(writeOf("after.bin", content, 7777));
    expect(await cachedBytes(res.location)).toBeLessThanOrEqual(4096);
    expect(digest(await readFile(res.location))).toBe(digest(content));
  });

  it("hands out at most its limit of stages, each page-aligned in size, and takes them back", () => {
    const pool = new StagePool(3);
    const taken = [pool.take(), pool.take(), pool.take()];
    expect(taken.every((b) => b?.length === STAGE_BYTES && b.byteOffset % 4096 === 0)).toBe(true);
    expect(pool.take()).toBeUndefined();
    pool.give(taken[0]!);
    expect(pool.out).toBe(2);
    expect(pool.take()).toBe(taken[0]);
  });

  it("a process short of address space (ulimit -v) gets no stages instead of an error, and writes the ordinary way", async () => {
    // Built module (pnpm test builds first): a child process with the limit.
    const module = new URL("../../../dist/sinks/fs/alignedStages.js", import.meta.url).href;
    const script = `const { StagePool } = await import(${JSON.stringify(module)}); console.log(String(new StagePool(4).take()));`;
    const { stdout } = await promisify(execFile)("bash", [
      "-c",
      `ulimit -v 6000000 && exec "${process.execPath}" --input-type=module -e '${script}'`,
    ]);
    expect(stdout.trim()).toBe("undefined");
  });
});

import { createHash } from "node:crypto";
import { constants } from "node:fs";
import { open, stat, unlink, type FileHandle } from "node:fs/promises";
import { dirname } from "node:path";
import { describeError, isVerifiedPayload, SinkError } from "@filerelay/core/internal";
import type { SinkWriteRequest } from "../sink.js";
import { STAGE_BYTES, StagePool } from "./alignedStages.js";

/**
 * Direct I/O (O_DIRECT) for large files: the payload's bytes go from our
 * staging buffers to the disk without passing through the page cache.
 *
 * A buffered write copies every byte into page-cache pages the kernel must
 * find first; on a virtual machine that hands free memory back to its host
 * (virtio balloon free-page reporting), each page touched again faults to the
 * host, and writing 1 GiB of new data cost 1.6–2.5 CPU-seconds (dd: 430–680
 * MB/s) against 0.7 s wall with O_DIRECT: half the producer's CPU for a large
 * file (docs/benchmarks.md). It also keeps a relayed 10 GB file from pushing
 * everything else out of the page cache.
 *
 * Every write but the last is one aligned STAGE_BYTES stage at a multiple of
 * STAGE_BYTES, with the next stage filled while it runs; the last partial
 * block goes through an ordinary descriptor. One fsync at the end makes it
 * all durable (there is no dirty page cache to bound in between, so
 * FSYNC_EVERY_CHUNKS does not apply).
 */

/** Direct writes at once per process, two stages each; more wait for nothing and write the ordinary way. */
const MAX_DIRECT_WRITES = 16;
/** Alignment of file offsets and lengths: covers logical block sizes up to 4 KiB. */
const ALIGN = 4096;
const PROGRESS_BYTES = 4 * 1024 * 1024;

const stages = new StagePool(2 * MAX_DIRECT_WRITES);
/** Devices (st_dev) whose file system refused O_DIRECT: written the ordinary way from then on. */
const refusedDevices = new Set<number>();

/** O_DIRECT refused by the file system (at open) or for an alignment it does not take (at a write). */
function isDirectIoRefusal(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === "EINVAL";
}

/** Treats the file system holding `dir` as one without O_DIRECT until the returned function is called (tests). */
export async function refuseDirectIo(dir: string): Promise<() => void> {
  const { dev } = await stat(dir);
  refusedDevices.add(dev);
  return () => refusedDevices.delete(dev);
}

function refused(dev: number, dir: string, req: SinkWriteRequest, err: unknown): void {
  if (refusedDevices.has(dev)) return;
  refusedDevices.add(dev);
  req.log.info(
    { dir, err: describeError(err) },
    "this file system refuses direct I/O (O_DIRECT): large files are written through the page cache here",
  );
}

export interface DirectWriteOptions {
  /** FILE_MODE, applied at create and, when the umask narrowed it, again before the fsync. */
  mode: number;
  needsChmod: boolean;
}

/**
 * Writes the payload into the new file `temp` with O_DIRECT, hashing it
 * unless the payload verifies itself, then fsyncs and closes it. Resolves
 * undefined, with nothing created, when direct I/O is not taken here (the file
 * system refuses it, or MAX_DIRECT_WRITES run already): the caller writes the
 * ordinary way. On failure `temp` may exist; removing it is the caller's.
 */
export async function writeDirect(
  req: SinkWriteRequest,
  temp: string,
  options: DirectWriteOptions,
): Promise<{ bytes: number; sha256: string } | undefined> {
  const dir = dirname(temp);
  const dev = (await stat(dir)).dev;
  if (refusedDevices.has(dev)) return undefined;
  const a = stages.take();
  const b = a && stages.take();
  if (!a || !b) {
    if (a) stages.give(a);
    return undefined;
  }
  const pair = [a, b];
  try {
    let fh: FileHandle;
    try {
      fh = await open(
        temp,
        constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_DIRECT,
        options.mode,
      );
    } catch (err) {
      if (!isDirectIoRefusal(err)) throw err;
      // Some kernels create the file before refusing the flag.
      await unlink(temp).catch(() => undefined);
      refused(dev, dir, req, err);
      return undefined;
    }
    try {
      return await streamStages(req, temp, fh, pair, options);
    } catch (err) {
      if (!(err instanceof FirstWriteRefused)) throw err;
      refused(dev, dir, req, err.cause);
      throw new SinkError(
        "WRITE_FAILED",
        `the file system of ${dir} refused a direct (O_DIRECT) write; the retry writes it the ordinary way`,
        { cause: err.cause },
      );
    } finally {
      await fh.close().catch(() => undefined);
    }
  } finally {
    for (const s of pair) stages.give(s);
  }
}

class FirstWriteRefused extends Error {
  constructor(override readonly cause: unknown) {
    super("the first direct write was refused");
  }
}

async function streamStages(
  req: SinkWriteRequest,
  temp: string,
  fh: FileHandle,
  pair: Buffer[],
  options: DirectWriteOptions,
): Promise<{ bytes: number; sha256: string }> {
  let current = 0;
  let fill = 0;
  let position = 0;
  let written = 0;
  let lastProgress = 0;
  let inFlight: Promise<void> | undefined;
  let tail: FileHandle | undefined;
  const writeAll = async (handle: FileHandle, buf: Buffer, at: number) => {
    for (let off = 0; off < buf.length;) off += (await handle.write(buf, off, buf.length - off, at + off)).bytesWritten;
  };
  /** Starts writing the current stage's first `len` bytes (after the previous write) and switches stages. */
  const flushStage = async (len: number) => {
    const buf = pair[current]!.subarray(0, len);
    const at = position;
    position += len;
    if (inFlight) await inFlight;
    inFlight = writeAll(fh, buf, at).then(() => {
      written += len;
      if (written - lastProgress >= PROGRESS_BYTES) {
        req.progress();
        lastProgress = written;
      }
    });
    // Marked handled; its failure surfaces where it is awaited.
    inFlight.catch(() => undefined);
    current ^= 1;
    fill = 0;
  };

  const source = req.open();
  const hash = isVerifiedPayload(source, req.envelope) ? undefined : createHash("sha256");
  let bytes = 0;
  try {
    for await (const piece of source as AsyncIterable<Buffer | string>) {
      req.signal.throwIfAborted();
      let data = typeof piece === "string" ? Buffer.from(piece) : piece;
      hash?.update(data);
      bytes += data.length;
      // Never write more than the envelope announced.
      if (bytes > req.envelope.size) break;
      while (data.length > 0) {
        const n = Math.min(STAGE_BYTES - fill, data.length);
        data.copy(pair[current]!, fill, 0, n);
        fill += n;
        data = data.subarray(n);
        if (fill === STAGE_BYTES) await flushStage(STAGE_BYTES);
      }
    }
    // The aligned part of the last stage directly, the rest (under ALIGN bytes) the ordinary way.
    const rest = fill % ALIGN;
    const aligned = fill - rest;
    if (aligned > 0) {
      const last = pair[current]!;
      // Returns once the other stage is free, and makes it current: the rest moves there.
      await flushStage(aligned);
      if (rest > 0) last.copy(pair[current]!, 0, aligned, aligned + rest);
      fill = rest;
    }
    if (inFlight) await inFlight;
    inFlight = undefined;
    if (fill > 0) {
      tail = await open(temp, constants.O_WRONLY);
      await writeAll(tail, pair[current]!.subarray(0, fill), position);
    }
    const handle = tail ?? fh;
    if (options.needsChmod) await handle.chmod(options.mode);
    // One fsync covers the file's data and metadata, whichever descriptor wrote them.
    await handle.sync();
  } catch (err) {
    // EINVAL before any direct write went through: the file system (or the device's
    // alignment) does not take them. Later, EINVAL is an ordinary write failure.
    if (written === 0 && isDirectIoRefusal(err)) throw new FirstWriteRefused(err);
    throw err;
  } finally {
    source.destroy();
    if (inFlight) await inFlight.catch(() => undefined);
    await tail?.close().catch(() => undefined);
  }
  return { bytes, sha256: hash ? hash.digest("hex") : req.envelope.sha256 };
}

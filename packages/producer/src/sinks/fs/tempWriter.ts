import { createHash } from "node:crypto";
import { closeSync, constants, fchmodSync, fsync, openSync, writeSync } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { promisify } from "node:util";
import { isVerifiedPayload, SinkError, type Envelope } from "@filerelay/core/internal";
import type { SinkWriteRequest } from "../sink.js";
import { writeDirect } from "./directWriter.js";

/** How a temp file is written: CHUNK_SIZE, FSYNC_EVERY_CHUNKS and FILE_MODE of the fs sink. */
export interface TempWriteOptions {
  CHUNK_SIZE: number;
  FSYNC_EVERY_CHUNKS: number;
  /** Files from this size are written with O_DIRECT where the file system takes it (0: never). */
  DIRECT_IO_MIN_BYTES: number;
  FILE_MODE: number;
  /** open() applies the umask: fchmod only when it actually narrows FILE_MODE. */
  needsChmod: boolean;
}

const PROGRESS_BYTES = 4 * 1024 * 1024;
const PROGRESS_MS = 2000;
/** Files up to this size take writeSmall(): read whole, written with synchronous calls. */
const SMALL_FILE_BYTES = 64 * 1024;
const fsyncFd = promisify(fsync);

/** Bytes between periodic fsyncs of a temp file (Infinity: only the final one). */
export function syncEveryBytes(options: TempWriteOptions): number {
  return options.FSYNC_EVERY_CHUNKS > 0 ? options.CHUNK_SIZE * options.FSYNC_EVERY_CHUNKS : Infinity;
}

/**
 * Writes the payload of `req` into the new file `temp` (created exclusively
 * with FILE_MODE), checks its size and SHA-256 against the envelope, fsyncs
 * and closes it: small files in one go, files from DIRECT_IO_MIN_BYTES with
 * O_DIRECT (directWriter.ts), the rest streamed with periodic fsyncs. On
 * failure the handle is closed; removing `temp` is the caller's.
 */
export function writeTempFile(req: SinkWriteRequest, temp: string, options: TempWriteOptions): Promise<void> {
  return req.envelope.size <= SMALL_FILE_BYTES && req.envelope.size <= syncEveryBytes(options)
    ? writeSmall(req, temp, options)
    : writeLarge(req, temp, options);
}

/**
 * A small file (no periodic fsync due before its end): the payload is read
 * whole (at most SMALL_FILE_BYTES), then written with synchronous open,
 * write and close — microseconds each — and an asynchronous fsync. Same
 * bytes and same fsync points as the streaming path.
 */
async function writeSmall(req: SinkWriteRequest, temp: string, options: TempWriteOptions): Promise<void> {
  const { envelope } = req;
  let fd: number | undefined;
  try {
    const source = req.open();
    const hash = isVerifiedPayload(source, envelope) ? undefined : createHash("sha256");
    const parts: Buffer[] = [];
    let bytes = 0;
    try {
      for await (const piece of source as AsyncIterable<Buffer | string>) {
        req.signal.throwIfAborted();
        const data = typeof piece === "string" ? Buffer.from(piece) : piece;
        bytes += data.length;
        // Never buffer more than the envelope announced.
        if (bytes > envelope.size) break;
        hash?.update(data);
        parts.push(data);
      }
    } finally {
      source.destroy();
    }
    const sha256 = hash ? hash.digest("hex") : envelope.sha256;
    if (bytes !== envelope.size || sha256 !== envelope.sha256) {
      throw new SinkError(
        "CHECKSUM_MISMATCH",
        `payload does not match the envelope: ${bytes > envelope.size ? `more than ${envelope.size}` : bytes} bytes sha256 ${sha256}, expected ${envelope.size} bytes sha256 ${envelope.sha256}`,
        { details: { bytes, sha256, expectedBytes: envelope.size, expectedSha256: envelope.sha256 } },
      );
    }
    fd = openSync(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, options.FILE_MODE);
    const data = parts.length === 1 ? parts[0]! : Buffer.concat(parts, bytes);
    for (let off = 0; off < data.length;) off += writeSync(fd, data, off, data.length - off);
    // umask may have narrowed the mode given to open().
    if (options.needsChmod) fchmodSync(fd, options.FILE_MODE);
    await fsyncFd(fd);
    closeSync(fd);
    fd = undefined;
  } finally {
    if (fd !== undefined) {
      try {
        closeSync(fd);
      } catch {
        /* the write already failed */
      }
    }
  }
}

async function writeLarge(req: SinkWriteRequest, temp: string, options: TempWriteOptions): Promise<void> {
  const { envelope } = req;
  if (options.DIRECT_IO_MIN_BYTES > 0 && envelope.size >= options.DIRECT_IO_MIN_BYTES) {
    const direct = await writeDirect(req, temp, { mode: options.FILE_MODE, needsChmod: options.needsChmod });
    if (direct) {
      checkWritten(direct, envelope);
      return;
    }
  }
  let fh: FileHandle | undefined;
  try {
    fh = await open(temp, "wx", options.FILE_MODE);
    checkWritten(await streamInto(fh, req, options), envelope);
    // umask may have narrowed the mode given to open().
    if (options.needsChmod) await fh.chmod(options.FILE_MODE);
    await fh.sync();
    await fh.close();
    fh = undefined;
  } finally {
    await fh?.close().catch(() => undefined);
  }
}

function checkWritten({ bytes, sha256 }: { bytes: number; sha256: string }, envelope: Envelope): void {
  if (bytes !== envelope.size || sha256 !== envelope.sha256) {
    throw new SinkError(
      "CHECKSUM_MISMATCH",
      `written bytes do not match the envelope: ${bytes} bytes sha256 ${sha256}, expected ${envelope.size} bytes sha256 ${envelope.sha256}`,
      { details: { bytes, sha256, expectedBytes: envelope.size, expectedSha256: envelope.sha256 } },
    );
  }
}

/**
 * Streams the payload into `fh`. The bytes and their order on disk are what
 * writing CHUNK_SIZE chunks one by one would give, and an fsync is started
 * exactly after every FSYNC_EVERY_CHUNKS × CHUNK_SIZE bytes:
 * - The payload's own buffers are written (writev), never copied into a
 *   staging buffer; a write covers everything received so far but never
 *   crosses an fsync boundary (so each periodic fsync covers exactly the
 *   bytes up to its boundary). At most about CHUNK_SIZE plus one payload
 *   piece is held before it is written.
 * - A periodic fsync runs while the next bytes are written; at most one is
 *   outstanding: when the next boundary is reached before the previous
 *   fsync finished, the writer waits for it before starting the next. So no
 *   more than 2 × FSYNC_EVERY_CHUNKS × CHUNK_SIZE bytes are ever unsynced
 *   mid-file (the periodic fsyncs bound dirty data and spread writeback; the
 *   durability guarantee is the final fsync, which the caller awaits before
 *   the link/rename, after this one's outstanding fsync has settled).
 * - A payload stream from core's openPayload for this very envelope is not
 *   hashed again: it ends only if every byte it handed out matched ce-sha256
 *   (else it errors before its end, and the temp file is removed), and these
 *   are exactly the buffers written here. Any other stream is hashed.
 */
async function streamInto(
  fh: FileHandle,
  req: SinkWriteRequest,
  options: TempWriteOptions,
): Promise<{ bytes: number; sha256: string }> {
  const chunkSize = options.CHUNK_SIZE;
  const syncBytes = syncEveryBytes(options);
  let nextSyncAt = syncBytes;
  let pending: Buffer[] = [];
  let pendingLen = 0;
  let bytes = 0;
  let lastProgressBytes = 0;
  let lastProgressAt = Date.now();
  /** The outstanding periodic fsync (at most one); its failure fails the write. */
  let syncing: Promise<void> | undefined;
  let syncError: { err: unknown } | undefined;

  const startSync = async () => {
    if (syncing) await syncing;
    if (syncError) throw syncError.err;
    const p = fh.sync().catch((err: unknown) => {
      syncError ??= { err };
    });
    syncing = p;
    void p.finally(() => {
      if (syncing === p) syncing = undefined;
    });
  };
  /** Writes `len` bytes from the front of `pending` in one call (less on a short write). */
  const writeFront = async (len: number) => {
    const bufs: Buffer[] = [];
    let taken = 0;
    while (taken < len) {
      const b = pending[0]!;
      const n = Math.min(b.length, len - taken);
      bufs.push(n === b.length ? b : b.subarray(0, n));
      taken += n;
      if (n === b.length) pending.shift();
      else pending[0] = b.subarray(n);
    }
    let written = (await fh.writev(bufs)).bytesWritten;
    // A short write (rare on a regular file): write the rest, one buffer at a time.
    for (const b of bufs) {
      if (written >= b.length) {
        written -= b.length;
        continue;
      }
      let off = written;
      written = 0;
      while (off < b.length) off += (await fh.write(b, off, b.length - off)).bytesWritten;
    }
    pendingLen -= len;
    bytes += len;
  };
  /** Writes what is pending (all of it when `all`, else only once a chunk's worth is there). */
  const drain = async (all: boolean) => {
    while (pendingLen > 0 && (all || pendingLen >= chunkSize)) {
      await writeFront(Math.min(pendingLen, nextSyncAt - bytes));
      if (bytes === nextSyncAt) {
        nextSyncAt += syncBytes;
        await startSync();
      }
      if (syncError) throw syncError.err;
      if (bytes - lastProgressBytes >= PROGRESS_BYTES || Date.now() - lastProgressAt >= PROGRESS_MS) {
        req.progress();
        lastProgressBytes = bytes;
        lastProgressAt = Date.now();
      }
    }
  };
  const source = req.open();
  const hash = isVerifiedPayload(source, req.envelope) ? undefined : createHash("sha256");
  try {
    for await (const piece of source as AsyncIterable<Buffer | string>) {
      req.signal.throwIfAborted();
      const data = typeof piece === "string" ? Buffer.from(piece) : piece;
      if (data.length === 0) continue;
      hash?.update(data);
      pending.push(data);
      pendingLen += data.length;
      await drain(false);
    }
    await drain(true);
    if (syncing) await syncing;
    if (syncError) throw syncError.err;
  } finally {
    source.destroy();
    // Never leave an fsync running on a handle the caller is about to close.
    if (syncing) await syncing;
    pending = [];
  }
  return { bytes, sha256: hash ? hash.digest("hex") : req.envelope.sha256 };
}

import { createHash } from "node:crypto";
import { closeSync, fstatSync, lstatSync, openSync, readSync, statSync, type Stats } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { errnoCode, FINGERPRINT_HEAD_BYTES, readHead, SourceError } from "@filerelay/core/internal";

/** Files up to this size are read with synchronous calls (see readInlineSync). */
const SYNC_READ_MAX_BYTES = 64 * 1024;

/** One version of a file: what the kernel reports for it (ctime changes on any write, even one that restores mtime). */
export interface Identity {
  size: number;
  mtimeMs: number;
  ino: number;
  ctimeMs: number;
}

export function sameIdentity(a: Identity, b: Identity): boolean {
  return a.size === b.size && a.mtimeMs === b.mtimeMs && a.ino === b.ino && a.ctimeMs === b.ctimeMs;
}

/**
 * Did an open file keep the content it had when `identity` was observed? As
 * sameIdentity, except that a file unlinked meanwhile (a writer renamed a new
 * version over its path) may show a new ctime: the unlink set it, and no one
 * can write to a file without a name but through a descriptor opened before.
 */
export function sameContent(after: Stats, identity: Identity): boolean {
  return (
    after.size === identity.size &&
    after.mtimeMs === identity.mtimeMs &&
    after.ino === identity.ino &&
    (after.ctimeMs === identity.ctimeMs || after.nlink === 0)
  );
}

/** What `path` holds now (its target's identity for a followed symlink), or undefined when nothing is there. */
export function currentIdentity(path: string, followLink: boolean): Identity | undefined {
  let st: Stats | undefined;
  try {
    st = followLink ? statSync(path, { throwIfNoEntry: false }) : lstatSync(path, { throwIfNoEntry: false });
  } catch (err) {
    if (errnoCode(err) === "ENOENT" || errnoCode(err) === "ENOTDIR") return undefined;
    throw err;
  }
  if (!st) return undefined;
  return { size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, ctimeMs: st.ctimeMs };
}

/** What a failed open means: the file is gone, was replaced by a symlink (the scanner decides), or cannot be read. */
function openFailure(err: unknown, rel: string): { kind: "vanished" } | { kind: "changed" } {
  const code = errnoCode(err);
  if (code === "ENOENT") return { kind: "vanished" };
  if (code === "ELOOP") return { kind: "changed" };
  throw new SourceError("FILE_READ_FAILED", `cannot open ${rel}`, { cause: err });
}

/** Reads exactly `size` bytes from the start, or null when the file holds a different number. */
async function readWhole(fh: FileHandle, size: number): Promise<Buffer | null> {
  // One byte more than expected reveals a file that grew.
  const buf = Buffer.allocUnsafe(size + 1);
  let total = 0;
  while (total < buf.length) {
    const { bytesRead } = await fh.read(buf, total, buf.length - total, total);
    if (bytesRead === 0) break;
    total += bytesRead;
  }
  return total === size ? buf.subarray(0, size) : null;
}

/**
 * Opens and reads a small file whole with synchronous calls: `body` is null
 * when the file holds a different number of bytes than `size` (one byte more
 * is asked for, to see a file that grew); `stat` is taken after the read.
 */
function readInlineSync(
  path: string,
  flags: number,
  size: number,
  rel: string,
): { body: Buffer | null; stat: Stats } | { kind: "vanished" } | { kind: "changed" } {
  let fd: number;
  try {
    fd = openSync(path, flags);
  } catch (err) {
    return openFailure(err, rel);
  }
  try {
    const buf = Buffer.allocUnsafe(size + 1);
    let total = 0;
    while (total < buf.length) {
      const n = readSync(fd, buf, total, buf.length - total, total);
      if (n === 0) break;
      total += n;
    }
    return { body: total === size ? buf.subarray(0, size) : null, stat: fstatSync(fd) };
  } catch (err) {
    // E.g. EAGAIN from a FIFO swapped in since the scan: name what it is.
    let isFile = true;
    try {
      isFile = fstatSync(fd).isFile();
    } catch {
      /* keep the read error */
    }
    if (!isFile) throw new SourceError("FILE_NOT_REGULAR", `${rel} is not a regular file`);
    throw new SourceError("FILE_READ_FAILED", `reading ${rel} failed`, { cause: err });
  } finally {
    try {
      closeSync(fd);
    } catch {
      /* read-only descriptor: nothing was lost */
    }
  }
}

/** The whole file from the start, in chunks (the handle stays open: the caller re-checks it afterwards). */
export async function* readChunks(fh: FileHandle, chunkBytes: number): AsyncGenerator<Buffer> {
  let position = 0;
  for (;;) {
    const buf = Buffer.allocUnsafe(chunkBytes);
    let filled = 0;
    while (filled < chunkBytes) {
      const { bytesRead } = await fh.read(buf, filled, chunkBytes - filled, position + filled);
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    if (filled > 0) yield buf.subarray(0, filled);
    if (filled < chunkBytes) return;
    position += filled;
  }
}

/** A version read and checked: whole with its SHA-256 when inline, else its head with the handle kept open for the upload. */
export type ReadVersion =
  | {
      kind: "read";
      inline: boolean;
      body: Buffer | undefined;
      head: Buffer;
      /** Hex SHA-256 of `body` (inline), else "". */
      sha256: string;
      /** Open only for a file that is not inline: the caller uploads from it and closes it. */
      fh: FileHandle | undefined;
    }
  | { kind: "vanished" }
  | { kind: "changed"; identity?: Identity };

/**
 * Reads the version observed as `identity` STABILITY_MS ago. Read first, then
 * one fstat: if it still matches (and so does the byte count), nothing was
 * written between that observation and the end of this read.
 */
export async function readVersion(
  path: string,
  flags: number,
  identity: Identity,
  inlineMaxBytes: number,
  rel: string,
): Promise<ReadVersion> {
  const inline = identity.size <= inlineMaxBytes;
  let fh: FileHandle | undefined;
  let body: Buffer | null | undefined;
  let head: Buffer;
  let after: Stats;
  if (inline && identity.size <= SYNC_READ_MAX_BYTES) {
    // A small file is read with synchronous calls: open, read, fstat and
    // close of a few KiB take microseconds, while four thread-pool round
    // trips cost far more CPU per file.
    const read = readInlineSync(path, flags, identity.size, rel);
    if ("kind" in read) return read;
    ({ body, stat: after } = read);
    head = (body ?? Buffer.alloc(0)).subarray(0, FINGERPRINT_HEAD_BYTES);
  } else {
    try {
      fh = await open(path, flags);
    } catch (err) {
      return openFailure(err, rel);
    }
    try {
      if (inline) {
        body = await readWhole(fh, identity.size);
        head = (body ?? Buffer.alloc(0)).subarray(0, FINGERPRINT_HEAD_BYTES);
      } else {
        head = await readHead(fh, identity.size);
      }
      after = await fh.stat();
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw new SourceError("FILE_READ_FAILED", `reading ${rel} failed`, { cause: err });
    }
  }
  let keepOpen = false;
  try {
    if (!after.isFile()) throw new SourceError("FILE_NOT_REGULAR", `${rel} is not a regular file`);
    if (
      !sameContent(after, identity) ||
      body === null ||
      (!inline && head.length < Math.min(identity.size, FINGERPRINT_HEAD_BYTES))
    ) {
      return {
        kind: "changed",
        identity: { size: after.size, mtimeMs: after.mtimeMs, ino: after.ino, ctimeMs: after.ctimeMs },
      };
    }
    const sha256 = body ? createHash("sha256").update(body).digest("hex") : "";
    keepOpen = !inline;
    return { kind: "read", inline, body: body ?? undefined, head, sha256, fh: keepOpen ? fh : undefined };
  } finally {
    if (!keepOpen) await fh?.close().catch(() => undefined);
  }
}

import { createReadStream } from "node:fs";
import { Transform, type Readable, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import { crc32, createGunzip } from "node:zlib";
import { extract as tarExtract, type Header as TarHeaders } from "tar-stream";
import yauzl from "yauzl";
import { FilerelayError } from "@filerelay/core";
import type { ArchiveKind } from "../archiveKind.js";

/**
 * Reading the entries of one archive file, one after the other, each as a
 * stream (never a whole entry in memory). Every format reports the same
 * entry shape; what to do with the names and sizes is decided by the caller.
 */

export type EntryType = "file" | "directory" | "symlink" | "hardlink" | "device";

export interface ArchiveEntry {
  /** The name as stored (not yet checked). */
  name: string;
  type: EntryType;
  /** Declared uncompressed size (undefined for a .gz, which does not say). */
  size: number | undefined;
  /** Declared compressed size (zip only). */
  compressedSize?: number;
  mtime?: Date;
  /** The content of a file entry; read it to its end, or it is drained. Call at most once. */
  open(): Readable;
}

export type EntryVisitor = (entry: ArchiveEntry) => Promise<void>;

/** The archive is damaged: a permanent error with the format library's message. */
export function corrupt(kind: ArchiveKind, err: unknown): FilerelayError {
  if (err instanceof FilerelayError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new FilerelayError("ARCHIVE_CORRUPT", `the ${kind} archive cannot be read: ${message}`, { cause: err });
}

/**
 * Calls `visit` for each entry of the archive at `file`, in archive order,
 * waiting for it before reading on. A format error rejects with
 * ARCHIVE_CORRUPT; an error thrown by `visit` stops the reading and is
 * rethrown as it is.
 */
export async function readArchive(
  file: string,
  kind: ArchiveKind,
  filename: string,
  visit: EntryVisitor,
): Promise<void> {
  switch (kind) {
    case "zip":
      return readZip(file, visit);
    case "tar":
    case "tar.gz":
      return readTar(file, kind, visit);
    case "gz":
      return readGz(file, filename, visit);
  }
}

async function readGz(file: string, name: string, visit: EntryVisitor): Promise<void> {
  let opened: Readable | undefined;
  const entry: ArchiveEntry = {
    name,
    type: "file",
    size: undefined,
    open: () => {
      const gunzip = createGunzip();
      const src = createReadStream(file);
      src.on("error", (err) => gunzip.destroy(err));
      opened = src.pipe(gunzip);
      // zlib's own messages ("unexpected end of file") are what an operator needs, as ARCHIVE_CORRUPT.
      return relay(opened, (err) => corrupt("gz", err));
    },
  };
  await visit(entry);
  if (!opened)
    await pipeline(createReadStream(file), createGunzip(), drain()).catch((err: unknown) => {
      throw corrupt("gz", err);
    });
}

function tarType(header: TarHeaders): EntryType | "skip" {
  switch (header.type) {
    case "file":
    case "contiguous-file":
    case null:
    case undefined:
      return "file";
    case "directory":
      return "directory";
    case "symlink":
      return "symlink";
    case "link":
      return "hardlink";
    case "character-device":
    case "block-device":
    case "fifo":
      return "device";
    default:
      // pax / GNU long-name records are folded into the next header by tar-stream; anything else carries no file.
      return "skip";
  }
}

async function readTar(file: string, kind: "tar" | "tar.gz", visit: EntryVisitor): Promise<void> {
  const extract = tarExtract();
  const src = createReadStream(file);
  const stages: NodeJS.ReadWriteStream[] = kind === "tar.gz" ? [createGunzip()] : [];
  let visitError: unknown;
  const piping = (stages.length > 0 ? pipeline(src, stages[0]!, extract) : pipeline(src, extract)).then(
    () => undefined,
    (err: unknown) => err,
  );
  try {
    for await (const stream of extract) {
      const header = stream.header;
      const type = tarType(header);
      if (type !== "skip") {
        let used = false;
        const name = header.name;
        await visit({
          name,
          type,
          size: header.size ?? 0,
          ...(header.mtime ? { mtime: header.mtime } : {}),
          open: () => {
            used = true;
            return relay(stream as unknown as Readable, (err) => corrupt(kind, err));
          },
        });
        if (used) await finished(stream as unknown as Readable);
      }
      stream.resume();
    }
  } catch (err) {
    visitError = err;
    extract.destroy();
    src.destroy();
  }
  const pipeError = await piping;
  if (visitError !== undefined) {
    // The visitor's own verdict wins over the "premature close" it caused.
    if (visitError instanceof FilerelayError && visitError.code !== "ARCHIVE_CORRUPT") throw visitError;
    throw corrupt(kind, pipeError ?? visitError);
  }
  if (pipeError !== undefined) throw corrupt(kind, pipeError);
}

function zipType(entry: yauzl.Entry, name: string): EntryType {
  const madeOnUnix = entry.versionMadeBy >> 8 === 3;
  const mode = (entry.externalFileAttributes >>> 16) & 0o170000;
  if (madeOnUnix && mode === 0o120000) return "symlink";
  if (madeOnUnix && (mode === 0o020000 || mode === 0o060000 || mode === 0o010000 || mode === 0o140000)) return "device";
  if (name.endsWith("/") || (madeOnUnix && mode === 0o040000)) return "directory";
  return "file";
}

async function readZip(file: string, visit: EntryVisitor): Promise<void> {
  let zip: yauzl.ZipFile;
  try {
    zip = await yauzl.openPromise(file, {
      lazyEntries: true,
      autoClose: false,
      // Names are checked by the caller (ARCHIVE_UNSAFE_PATH), not refused here as a format error.
      decodeStrings: false,
      validateEntrySizes: true,
    });
  } catch (err) {
    throw corrupt("zip", err);
  }
  try {
    await new Promise<void>((resolve, reject) => {
      let failed = false;
      const fail = (err: unknown) => {
        if (failed) return;
        failed = true;
        reject(err instanceof FilerelayError ? err : corrupt("zip", err));
      };
      zip.on("error", fail);
      zip.on("end", () => {
        if (!failed) resolve();
      });
      zip.on("entry", (entry: yauzl.Entry) => {
        const raw = entry.fileName as unknown as Buffer;
        const name = yauzl.getFileNameLowLevel(entry.generalPurposeBitFlag, raw, entry.extraFields, false);
        const type = zipType(entry, name);
        if (type === "file" && entry.isEncrypted()) {
          fail(new FilerelayError("ARCHIVE_CORRUPT", `zip entry ${JSON.stringify(name)} is encrypted: not supported`));
          return;
        }
        let stream: Readable | undefined;
        visit({
          name,
          type,
          size: entry.uncompressedSize,
          compressedSize: entry.compressedSize,
          mtime: entry.getLastModDate(),
          open: () => {
            const check = crcCheck(entry.crc32, name);
            const pass = relay(check, (err) => corrupt("zip", err));
            zip.openReadStream(entry, (err, s) => {
              if (err) {
                check.destroy(err);
                return;
              }
              stream = s;
              s.on("error", (e) => check.destroy(e));
              s.pipe(check);
            });
            return pass;
          },
        })
          .then(async () => {
            if (stream) await finished(stream).catch(() => undefined);
            zip.readEntry();
          })
          .catch(fail);
      });
      zip.readEntry();
    });
  } finally {
    zip.close();
  }
}

/** Verifies a zip entry's CRC-32 as it streams through (yauzl checks sizes, not content). */
function crcCheck(expected: number, name: string): Transform {
  let crc = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      crc = crc32(chunk, crc);
      cb(null, chunk);
    },
    flush(cb: TransformCallback) {
      if (crc >>> 0 !== expected >>> 0) {
        cb(new Error(`CRC-32 of entry ${JSON.stringify(name)} does not match: the archive is damaged`));
      } else cb();
    },
  });
}

/** `src` piped into a pass-through that also ends with `src`'s error, rewritten by `map`. */
function relay(src: Readable, map: (err: unknown) => Error): Readable {
  const out = new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      cb(null, chunk);
    },
  });
  src.on("error", (err) => out.destroy(map(err)));
  return src.pipe(out);
}

function drain(): Transform {
  return new Transform({
    transform(_chunk: Buffer, _enc, cb: TransformCallback) {
      cb();
    },
  });
}

function finished(stream: Readable): Promise<void> {
  return new Promise((resolve, reject) => {
    if (stream.readableEnded || stream.destroyed) return resolve();
    stream.once("end", resolve);
    stream.once("close", resolve);
    stream.once("error", reject);
  });
}

import { createHash, randomBytes } from "node:crypto";
import {
  closeSync,
  constants,
  createReadStream,
  fchmodSync,
  fsync,
  linkSync,
  lstatSync,
  openSync,
  realpathSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { promisify } from "node:util";
import {
  access,
  mkdir,
  open,
  readdir,
  realpath,
  rename,
  rmdir,
  stat,
  unlink,
  utimes,
  type FileHandle,
} from "node:fs/promises";
import { basename, dirname, isAbsolute, join, relative, sep } from "node:path";
import { pipeline } from "node:stream/promises";
import { ConfigError, FilerelayError, isVerifiedPayload, SinkError, type Envelope, type Logger } from "@filerelay/core";
import type { ConflictMode } from "../config.js";
import { resolveInside, withConflictSuffix } from "../organizer.js";
import type { Sink, SinkWriteRequest, SinkWriteResult } from "./sink.js";

export interface FsSinkOptions {
  /** Required for this sink (the config schema enforces it when SINK=fs). */
  OUTPUT_DIR?: string | undefined;
  ON_CONFLICT: ConflictMode;
  CHUNK_SIZE: number;
  FSYNC_EVERY_CHUNKS: number;
  FILE_MODE: number;
}

export interface FsSinkDeps {
  log: Logger;
  /** Temp files in the older host/pid naming, untouched for this long, are removed by init() (default 1 h). */
  staleTempMs?: number;
  /** A temp file untouched for this long belongs to a writer that is gone (default 30 s). */
  tempTtlMs?: number;
  /** How often a live writer touches its temp files (default 5 s; well under tempTtlMs). */
  tempTouchMs?: number;
}

/**
 * Temp files: `.filerelay-<ce-id>.<instance>.<n>.tmp`, in the target
 * directory (so the final rename stays on one filesystem). `instance` is a
 * random id per sink, `n` a counter: unique across hosts, containers and pid
 * namespaces without a random draw per file. Output names never start with
 * '.', so they can never match. The older
 * `.filerelay-<ce-id>.<host>.<pid>.<random>.tmp` names match too (group 2 is
 * then undefined).
 *
 * Whether a temp file's writer is alive is told by the file itself: a live
 * writer touches each of its temp files every tempTouchMs, whether or not
 * bytes arrive, so one untouched for tempTtlMs was left by a writer that is
 * gone (crashed, killed, its host or pod replaced), wherever it ran.
 */
export const TEMP_FILE_PATTERN =
  /^\.filerelay-([0-9a-fA-F-]{36})\.(?:([0-9a-f]{16})\.[0-9a-z]+|[A-Za-z0-9-]*\.\d+\.[0-9a-z]+)\.tmp$/;

const PROGRESS_BYTES = 4 * 1024 * 1024;
/** Files up to this size take writeSmall(): read whole, written with synchronous calls. */
const SMALL_FILE_BYTES = 64 * 1024;
const fsyncFd = promisify(fsync);
const PROGRESS_MS = 2000;
const SWEEP_MAX_ENTRIES = 200_000;
const SWEEP_MAX_DEPTH = 32;
const DEFAULT_STALE_TEMP_MS = 60 * 60 * 1000;
const DEFAULT_TEMP_TTL_MS = 30_000;
const DEFAULT_TEMP_TOUCH_MS = 5000;
/** Most `-N` names tried by ON_CONFLICT=rename before giving up (transiently). */
const MAX_RENAME_SUFFIX = 10_000;

/** Temp-file name number `seq` of sink `instance` for file version `id`. */
export function tempFileName(id: string, instance: string, seq: number): string {
  return `.filerelay-${id}.${instance}.${seq.toString(36)}.tmp`;
}

export interface TempFileFacts {
  /** The writing sink's instance; undefined for the older host/pid names. */
  owner: string | undefined;
  /** This sink's instance. */
  self: string;
  /** Time since the temp file was last written or touched. */
  tempAgeMs: number;
  tempTtlMs: number;
  /** For the older names, whose writers do not touch their files: removed after this long untouched. */
  legacyStaleMs: number;
}

/**
 * What to do with a temp file found in OUTPUT_DIR: `remove` it (its writer is
 * gone), `keep` it, or look again `later` (touched recently: a live writer,
 * or one that crashed moments ago). Decided by age alone, never by pid or
 * hostname, which collide between containers and change with a pod.
 */
export function staleTempVerdict(f: TempFileFacts): "remove" | "keep" | "later" {
  if (f.owner === f.self) return "keep";
  if (f.owner === undefined) return f.tempAgeMs > f.legacyStaleMs ? "remove" : "keep";
  return f.tempAgeMs > f.tempTtlMs ? "remove" : "later";
}

function errno(err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === "string" ? code : undefined;
}

/**
 * The filesystem sink: streams into a temp file next to the target, fsyncs,
 * verifies SHA-256, sets FILE_MODE, moves it into place according to
 * ON_CONFLICT, and fsyncs the directory, so the final name only ever holds a
 * complete file, even after a SIGKILL.
 */
export function createFsSink(options: FsSinkOptions, deps: FsSinkDeps): Sink {
  if (!options.OUTPUT_DIR) throw new ConfigError(["OUTPUT_DIR: required when SINK=fs"]);
  const root = options.OUTPUT_DIR;
  const { log } = deps;
  const staleTempMs = deps.staleTempMs ?? DEFAULT_STALE_TEMP_MS;
  const tempTtlMs = deps.tempTtlMs ?? DEFAULT_TEMP_TTL_MS;
  const tempTouchMs = deps.tempTouchMs ?? DEFAULT_TEMP_TOUCH_MS;
  const instance = randomBytes(8).toString("hex");
  let tempSeq = 0;
  /** Our temp files from creation until renamed or removed: touched every tempTouchMs. */
  const liveTemps = new Set<string>();
  const touchTimer = setInterval(() => {
    const now = new Date();
    for (const temp of liveTemps) void utimes(temp, now, now).catch(() => undefined);
  }, tempTouchMs).unref();
  let recheckTimer: NodeJS.Timeout | undefined;
  let closed = false;
  /** Output directories known to exist: no mkdir per file (a removed one is recreated on ENOENT). */
  const knownDirs = new Set<string>();
  let realRoot: string | undefined;
  // open() applies the umask; fchmod only when it actually narrows FILE_MODE.
  const needsChmod = (options.FILE_MODE & ~process.umask()) !== options.FILE_MODE;

  async function init(): Promise<void> {
    try {
      await mkdir(root, { recursive: true });
    } catch (err) {
      // Not fatal: the operator may fix it while we run; writes fail (and retry) meanwhile.
      log.warn(
        { outputDir: root, err: (err as Error).message },
        "cannot create OUTPUT_DIR; writes will fail until it exists",
      );
      return;
    }
    const { removed, later } = await sweepTempFiles(await listTempFiles());
    if (removed > 0) log.info({ outputDir: root, removed }, "removed stale temp files");
    if (later.length > 0) {
      // Touched recently: live peers' files, or those of a writer that crashed moments ago
      // (typically our own predecessor). Look again once a dead writer's would be stale.
      recheckTimer = setTimeout(() => {
        recheckTimer = undefined;
        void sweepTempFiles(later).then(({ removed: n }) => {
          if (n > 0) log.info({ outputDir: root, removed: n }, "removed stale temp files");
        });
      }, tempTtlMs + 1000).unref();
    }
  }

  /** Temp files anywhere under OUTPUT_DIR (bounded walk, symlinks not followed). */
  async function listTempFiles(): Promise<string[]> {
    const found: string[] = [];
    let visited = 0;
    const walk = async (dir: string, depth: number): Promise<void> => {
      if (depth > SWEEP_MAX_DEPTH || visited > SWEEP_MAX_ENTRIES) return;
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (err) {
        log.warn({ dir, err: (err as Error).message }, "cannot list directory while looking for stale temp files");
        return;
      }
      for (const entry of entries) {
        if (++visited > SWEEP_MAX_ENTRIES) {
          log.warn({ outputDir: root, limit: SWEEP_MAX_ENTRIES }, "stale temp sweep stopped at its entry limit");
          return;
        }
        const full = join(dir, entry.name);
        if (entry.isDirectory()) await walk(full, depth + 1);
        else if (entry.isFile() && TEMP_FILE_PATTERN.test(entry.name)) found.push(full);
      }
    };
    await walk(root, 0);
    return found;
  }

  /** Removes those of `temps` whose writer is gone; returns those to look at again later. */
  async function sweepTempFiles(temps: readonly string[]): Promise<{ removed: number; later: string[] }> {
    let removed = 0;
    const later: string[] = [];
    for (const file of temps) {
      try {
        const st = await stat(file);
        const verdict = staleTempVerdict({
          owner: TEMP_FILE_PATTERN.exec(basename(file))?.[2],
          self: instance,
          tempAgeMs: Date.now() - st.mtimeMs,
          tempTtlMs,
          legacyStaleMs: staleTempMs,
        });
        if (verdict === "later") later.push(file);
        if (verdict !== "remove") continue;
        await unlink(file);
        removed++;
        log.debug({ file }, "removed stale temp file");
      } catch (err) {
        if (errno(err) !== "ENOENT") log.warn({ file, err: (err as Error).message }, "cannot remove stale temp file");
      }
    }
    return { removed, later };
  }

  async function write(req: SinkWriteRequest): Promise<SinkWriteResult> {
    if (closed) throw new SinkError("SHUTDOWN", "fs sink is closed");
    const { envelope } = req;
    const target = resolveInside(root, req.path);
    const dir = dirname(target);
    try {
      await ensureDir(dir);
    } catch (err) {
      throw classifyWriteError(err, `cannot create output directory ${dir}`);
    }

    // Decide before writing when the answer is already known (redelivery, skip, fail).
    const early = await precheck(target, req.path, envelope);
    if (early) return early;

    const temp = join(dir, tempFileName(envelope.id, instance, ++tempSeq));
    const syncBytes = options.FSYNC_EVERY_CHUNKS > 0 ? options.CHUNK_SIZE * options.FSYNC_EVERY_CHUNKS : Infinity;
    liveTemps.add(temp);
    try {
      return await (envelope.size <= SMALL_FILE_BYTES && envelope.size <= syncBytes
        ? writeSmall(req, temp, target, dir)
        : writeLarge(req, temp, target, dir));
    } finally {
      liveTemps.delete(temp);
    }
  }

  async function writeLarge(
    req: SinkWriteRequest,
    temp: string,
    target: string,
    dir: string,
  ): Promise<SinkWriteResult> {
    const { envelope } = req;
    let fh: FileHandle | undefined;
    try {
      fh = await open(temp, "wx", options.FILE_MODE);
      const { bytes, sha256 } = await streamInto(fh, req);
      if (bytes !== envelope.size || sha256 !== envelope.sha256) {
        throw new SinkError(
          "CHECKSUM_MISMATCH",
          `written bytes do not match the envelope: ${bytes} bytes sha256 ${sha256}, expected ${envelope.size} bytes sha256 ${envelope.sha256}`,
          { details: { bytes, sha256, expectedBytes: envelope.size, expectedSha256: envelope.sha256 } },
        );
      }
      // umask may have narrowed the mode given to open().
      if (needsChmod) await fh.chmod(options.FILE_MODE);
      await fh.sync();
      await fh.close();
      fh = undefined;
      const result = await commit(temp, target, req.path, envelope);
      await fsyncDirShared(dir);
      return result;
    } catch (err) {
      await fh?.close().catch(() => undefined);
      await unlink(temp).catch(() => undefined);
      throw classifyWriteError(err, `writing ${target} failed`);
    }
  }

  /**
   * Streams the payload into `fh`. The bytes and their order on disk are what
   * writing CHUNK_SIZE chunks one by one would give, and an fsync is started
   * exactly after every FSYNC_EVERY_CHUNKS × CHUNK_SIZE bytes, as before; what
   * changed is only how (measured for issue 10):
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
  /**
   * A small file (no periodic fsync due before its end): the payload is read
   * whole (at most SMALL_FILE_BYTES), then written with synchronous open,
   * write and close — microseconds each — and an asynchronous fsync. Same
   * bytes, same fsync points and same commit as the streaming path.
   */
  async function writeSmall(
    req: SinkWriteRequest,
    temp: string,
    target: string,
    dir: string,
  ): Promise<SinkWriteResult> {
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
      if (needsChmod) fchmodSync(fd, options.FILE_MODE);
      await fsyncFd(fd);
      closeSync(fd);
      fd = undefined;
      const result = await commit(temp, target, req.path, envelope);
      await fsyncDirShared(dir);
      return result;
    } catch (err) {
      if (fd !== undefined) {
        try {
          closeSync(fd);
        } catch {
          /* the write already failed */
        }
      }
      await unlink(temp).catch(() => undefined);
      throw classifyWriteError(err, `writing ${target} failed`);
    }
  }

  async function streamInto(fh: FileHandle, req: SinkWriteRequest): Promise<{ bytes: number; sha256: string }> {
    const chunkSize = options.CHUNK_SIZE;
    const syncBytes = options.FSYNC_EVERY_CHUNKS > 0 ? chunkSize * options.FSYNC_EVERY_CHUNKS : Infinity;
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

  /** Where and whether to write, judged before any byte is written. */
  async function precheck(target: string, path: string, envelope: Envelope): Promise<SinkWriteResult | undefined> {
    const state = await contentState(target, envelope);
    if (state === "same") return { outcome: "duplicate", location: target, bytes: envelope.size };
    if (state === "absent") return undefined;
    switch (options.ON_CONFLICT) {
      case "skip":
        log.info({ path, location: target }, "target exists with other content; ON_CONFLICT=skip");
        return { outcome: "skipped", location: target, bytes: 0 };
      case "fail":
        throw conflict(target);
      case "rename":
        // A redelivered envelope may already sit under a suffixed name.
        for (let n = 1; n <= MAX_RENAME_SUFFIX; n++) {
          const candidate = resolveInside(root, withConflictSuffix(path, n));
          const s = await contentState(candidate, envelope);
          if (s === "same") return { outcome: "duplicate", location: candidate, bytes: envelope.size };
          if (s === "absent") return undefined;
        }
        return undefined;
      case "overwrite":
        return undefined;
    }
  }

  /** Moves the complete temp file into place. link() refuses to replace, which makes rename/skip/fail race-free. */
  async function commit(temp: string, target: string, path: string, envelope: Envelope): Promise<SinkWriteResult> {
    if (options.ON_CONFLICT === "overwrite") {
      await rename(temp, target);
      return { outcome: "written", location: target, bytes: envelope.size };
    }
    for (let n = 0; n <= MAX_RENAME_SUFFIX; n++) {
      const candidate = n === 0 ? target : resolveInside(root, withConflictSuffix(path, n));
      if (await placeNoReplace(temp, candidate)) {
        return { outcome: "written", location: candidate, bytes: envelope.size };
      }
      // Someone (a peer producer, an operator) got there first.
      if ((await contentState(candidate, envelope)) === "same") {
        await unlink(temp);
        return { outcome: "duplicate", location: candidate, bytes: envelope.size };
      }
      if (options.ON_CONFLICT === "skip") {
        await unlink(temp);
        log.info({ path, location: candidate }, "target exists with other content; ON_CONFLICT=skip");
        return { outcome: "skipped", location: candidate, bytes: 0 };
      }
      if (options.ON_CONFLICT === "fail") throw conflict(candidate);
    }
    throw new SinkError("WRITE_FAILED", `no free name for ${target} after ${MAX_RENAME_SUFFIX} suffixes`);
  }

  /** Renames temp → candidate unless candidate exists; false if it does. */
  async function placeNoReplace(temp: string, candidate: string): Promise<boolean> {
    try {
      linkSync(temp, candidate);
    } catch (err) {
      const code = errno(err);
      if (code === "EEXIST") return false;
      if (code !== "EPERM" && code !== "ENOTSUP" && code !== "EOPNOTSUPP" && code !== "EXDEV") throw err;
      // No hard links here (some network/FUSE filesystems): check-then-rename, racy but best available.
      if ((await contentState(candidate, undefined)) !== "absent") return false;
      await rename(temp, candidate);
      return true;
    }
    unlinkSync(temp);
    return true;
  }

  /** absent | same (identical content) | other (anything else there). */
  async function contentState(path: string, envelope: Envelope | undefined): Promise<"absent" | "same" | "other"> {
    const st = lstatSync(path, { throwIfNoEntry: false });
    if (!st) return "absent";
    if (!envelope || !st.isFile() || st.size !== envelope.size) return "other";
    const hash = createHash("sha256");
    await pipeline(createReadStream(path), hash);
    return hash.digest("hex") === envelope.sha256 ? "same" : "other";
  }

  /**
   * Makes sure `dir` exists inside OUTPUT_DIR. A known directory costs one
   * realpath (checked every time: it may have been swapped for a link); an
   * unknown one is created by createInside().
   */
  async function ensureDir(dir: string): Promise<void> {
    if (knownDirs.has(dir)) {
      try {
        await assertRealInside(dir);
        return;
      } catch (err) {
        if (errno(err) !== "ENOENT") throw err;
        // Removed behind our back: create it again.
        knownDirs.delete(dir);
      }
    }
    await createInside(dir);
    await assertRealInside(dir);
    if (knownDirs.size >= 10_000) knownDirs.clear();
    knownDirs.add(dir);
  }

  /**
   * Creates `dir` one component at a time below OUTPUT_DIR, checking each one
   * (existing or just made) before going deeper: a component that is a link
   * leading outside (e.g. a date directory symlinked elsewhere) is refused
   * before anything is created through it, and one swapped for such a link
   * while we create it is removed again (it is empty: we just made it).
   */
  async function createInside(dir: string): Promise<void> {
    await mkdir(root, { recursive: true });
    let current = root;
    for (const part of relative(root, dir).split(sep)) {
      if (part === "" || part === ".") continue;
      current = join(current, part);
      let created = false;
      try {
        await mkdir(current);
        created = true;
      } catch (err) {
        if (errno(err) !== "EEXIST") throw err;
      }
      try {
        await assertRealInside(current);
      } catch (err) {
        if (created) await rmdir(current).catch(() => undefined);
        throw err;
      }
    }
  }

  async function assertRealInside(dir: string): Promise<void> {
    realRoot ??= await realpath(root);
    // Synchronous, like the other per-file metadata calls of this sink (lstat,
    // link, unlink): each takes microseconds on a local file system, while a
    // thread-pool round trip per call cost more CPU than the call itself.
    const realDir = realpathSync.native(dir);
    const rel = relative(realRoot, realDir);
    if (isAbsolute(rel) || rel === ".." || rel.startsWith(`..${sep}`)) {
      throw new SinkError(
        "PATH_UNSAFE",
        `output directory ${dir} resolves to ${realDir}, outside OUTPUT_DIR ${realRoot}`,
      );
    }
  }

  function conflict(target: string): SinkError {
    return new SinkError("CONFLICT", `${target} exists with different content and ON_CONFLICT=fail`, {
      details: { location: target },
    });
  }

  async function checkReady(): Promise<void> {
    try {
      const st = await stat(root);
      if (!st.isDirectory()) throw new Error("not a directory");
      await access(root, constants.W_OK);
    } catch (err) {
      throw new SinkError("WRITE_FAILED", `OUTPUT_DIR ${root} is not a writable directory`, { cause: err });
    }
  }

  function close(): Promise<void> {
    closed = true;
    clearInterval(touchTimer);
    clearTimeout(recheckTimer);
    return Promise.resolve();
  }

  return {
    kind: "fs",
    init,
    write,
    checkReady,
    close,
    [Symbol.asyncDispose]: close,
  };
}

/**
 * FilerelayErrors keep their code (CHECKSUM_MISMATCH, CONFLICT, payload errors…);
 * a full disk or quota is DISK_SPACE_LOW (an outage: retried without using up
 * MAX_DELIVER); anything else is a transient WRITE_FAILED.
 */
export function classifyWriteError(err: unknown, message: string): FilerelayError {
  if (err instanceof FilerelayError) return err;
  const code = errno(err);
  if (code === "ENOSPC" || code === "EDQUOT") {
    return new SinkError("DISK_SPACE_LOW", `${message}: the output filesystem is full (${code})`, { cause: err });
  }
  return new SinkError("WRITE_FAILED", code ? `${message} (${code})` : message, { cause: err });
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Per directory: the running fsync, and the next one (not started yet) that later callers join. */
const dirSyncs = new Map<string, { running: Promise<void>; next: Promise<void> | undefined }>();
const ignore = () => undefined;

/**
 * fsync of a directory, shared by concurrent writers (group commit): a caller
 * whose rename is done joins the next fsync that has not started yet, so it is
 * covered, and N files renamed into one directory at once cost about two
 * directory fsyncs instead of N.
 */
export function fsyncDirShared(dir: string): Promise<void> {
  const state = dirSyncs.get(dir);
  if (state?.next) return state.next;
  const prev = state?.running ?? Promise.resolve();
  const entry = state ?? { running: prev, next: undefined };
  const p = prev.then(ignore, ignore).then(() => {
    // Started: whoever comes from now on needs a later one.
    entry.next = undefined;
    return fsyncDir(dir);
  });
  entry.running = p;
  entry.next = p;
  if (!state) dirSyncs.set(dir, entry);
  const cleanup = () => {
    if (entry.running === p && dirSyncs.get(dir) === entry) dirSyncs.delete(dir);
  };
  p.then(cleanup, cleanup);
  return p;
}

/** For tests and operators: is this a temp file name of ours? */
export function isTempFileName(name: string): boolean {
  return TEMP_FILE_PATTERN.test(basename(name));
}

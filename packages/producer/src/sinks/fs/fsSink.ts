import { unlink } from "node:fs/promises";
import { dirname } from "node:path";
import { ConfigError, FilerelayError, SinkError, type Logger } from "@filerelay/core";
import { errnoCode, writableDirectoryProblem } from "@filerelay/core/internal";
import type { ConflictMode } from "../../config.js";
import { resolveInside } from "../../organizer.js";
import type { Sink, SinkWriteRequest, SinkWriteResult } from "../sink.js";
import { fsyncDirShared } from "./dirSync.js";
import { createOutputDirs } from "./outputDirs.js";
import { createPlacement } from "./placement.js";
import { createTempFiles } from "./tempFiles.js";
import { writeTempFile, type TempWriteOptions } from "./tempWriter.js";
import { classifyWriteError } from "./writeErrors.js";

const DEFAULT_DIRECT_IO_MIN_BYTES = 8 * 1024 * 1024;

export interface FsSinkOptions {
  /** Required for this sink (the config schema enforces it when SINK=fs). */
  OUTPUT_DIR?: string | undefined;
  ON_CONFLICT: ConflictMode;
  CHUNK_SIZE: number;
  FSYNC_EVERY_CHUNKS: number;
  /** Files from this size are written with O_DIRECT (default 8 MiB; 0: never). */
  DIRECT_IO_MIN_BYTES?: number | undefined;
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
 * The filesystem sink: streams into a temp file next to the target, fsyncs,
 * verifies SHA-256, sets FILE_MODE, moves it into place according to
 * ON_CONFLICT, and fsyncs the directory, so the final name only ever holds a
 * complete file, even after a SIGKILL.
 */
export function createFsSink(options: FsSinkOptions, deps: FsSinkDeps): Sink {
  if (!options.OUTPUT_DIR) throw new ConfigError(["OUTPUT_DIR: required when SINK=fs"]);
  const root = options.OUTPUT_DIR;
  const { log } = deps;
  const temps = createTempFiles({
    root,
    log,
    staleTempMs: deps.staleTempMs,
    tempTtlMs: deps.tempTtlMs,
    tempTouchMs: deps.tempTouchMs,
  });
  const dirs = createOutputDirs(root);
  const placement = createPlacement(root, options.ON_CONFLICT, log);
  const writeOptions: TempWriteOptions = {
    CHUNK_SIZE: options.CHUNK_SIZE,
    FSYNC_EVERY_CHUNKS: options.FSYNC_EVERY_CHUNKS,
    DIRECT_IO_MIN_BYTES: options.DIRECT_IO_MIN_BYTES ?? DEFAULT_DIRECT_IO_MIN_BYTES,
    FILE_MODE: options.FILE_MODE,
    needsChmod: (options.FILE_MODE & ~process.umask()) !== options.FILE_MODE,
  };
  let closed = false;

  /** Why the last write failed for want of a writable output location, until a write succeeds (for /readyz). */
  let notWritable: string | undefined;

  /**
   * Start-up: an OUTPUT_DIR that cannot take output (a file, under /proc, not
   * writable for this uid) is a configuration error (exit 78): starting would
   * only pull envelopes it cannot land.
   */
  async function init(): Promise<void> {
    const problem = await writableDirectoryProblem(root, { create: true });
    if (problem !== undefined) throw new ConfigError([`OUTPUT_DIR: ${problem}`]);
    await temps.sweep();
  }

  /** A failure's code, checking whether OUTPUT_DIR itself became unusable (an outage, not this file's fault). */
  async function classify(err: unknown, message: string): Promise<FilerelayError> {
    const rootProblem =
      err instanceof FilerelayError || errnoCode(err) === undefined
        ? undefined
        : await writableDirectoryProblem(root, { create: false });
    const classified = classifyWriteError(err, message, rootProblem);
    if (classified.code === "OUTPUT_NOT_WRITABLE") notWritable = classified.message;
    return classified;
  }

  async function write(req: SinkWriteRequest): Promise<SinkWriteResult> {
    if (closed) throw new SinkError("SHUTDOWN", "fs sink is closed");
    const { envelope } = req;
    const target = resolveInside(root, req.path);
    const dir = dirname(target);
    try {
      await dirs.ensure(dir);
    } catch (err) {
      throw await classify(err, `cannot create output directory ${dir}`);
    }

    // Decide before writing when the answer is already known (redelivery, skip, fail).
    let early: SinkWriteResult | undefined;
    try {
      early = await placement.precheck(target, req.path, envelope);
    } catch (err) {
      throw await classify(err, `checking ${target} failed`);
    }
    if (early) {
      notWritable = undefined;
      return early;
    }

    const temp = temps.claim(dir, envelope.id);
    try {
      await writeTempFile(req, temp, writeOptions);
      const result = await placement.commit(temp, target, req.path, envelope);
      await fsyncDirShared(dir);
      notWritable = undefined;
      return result;
    } catch (err) {
      await unlink(temp).catch(() => undefined);
      throw await classify(err, `writing ${target} failed`);
    } finally {
      temps.release(temp);
    }
  }

  async function checkReady(): Promise<void> {
    const problem = await writableDirectoryProblem(root, { create: false });
    if (problem !== undefined) throw new SinkError("OUTPUT_NOT_WRITABLE", `OUTPUT_DIR ${problem}`);
    // OUTPUT_DIR itself may be fine while a directory under it refuses us: not ready until a write succeeds.
    if (notWritable !== undefined) throw new SinkError("OUTPUT_NOT_WRITABLE", notWritable);
  }

  function close(): Promise<void> {
    closed = true;
    temps.close();
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

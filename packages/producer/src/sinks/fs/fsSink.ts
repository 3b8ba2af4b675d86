import { access, constants, mkdir, stat, unlink } from "node:fs/promises";
import { dirname } from "node:path";
import { ConfigError, SinkError, type Logger } from "@filerelay/core";
import type { ConflictMode } from "../../config.js";
import { resolveInside } from "../../organizer.js";
import type { Sink, SinkWriteRequest, SinkWriteResult } from "../sink.js";
import { fsyncDirShared } from "./dirSync.js";
import { createOutputDirs } from "./outputDirs.js";
import { createPlacement } from "./placement.js";
import { createTempFiles } from "./tempFiles.js";
import { writeTempFile, type TempWriteOptions } from "./tempWriter.js";
import { classifyWriteError } from "./writeErrors.js";

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
    FILE_MODE: options.FILE_MODE,
    needsChmod: (options.FILE_MODE & ~process.umask()) !== options.FILE_MODE,
  };
  let closed = false;

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
    await temps.sweep();
  }

  async function write(req: SinkWriteRequest): Promise<SinkWriteResult> {
    if (closed) throw new SinkError("SHUTDOWN", "fs sink is closed");
    const { envelope } = req;
    const target = resolveInside(root, req.path);
    const dir = dirname(target);
    try {
      await dirs.ensure(dir);
    } catch (err) {
      throw classifyWriteError(err, `cannot create output directory ${dir}`);
    }

    // Decide before writing when the answer is already known (redelivery, skip, fail).
    const early = await placement.precheck(target, req.path, envelope);
    if (early) return early;

    const temp = temps.claim(dir, envelope.id);
    try {
      await writeTempFile(req, temp, writeOptions);
      const result = await placement.commit(temp, target, req.path, envelope);
      await fsyncDirShared(dir);
      return result;
    } catch (err) {
      await unlink(temp).catch(() => undefined);
      throw classifyWriteError(err, `writing ${target} failed`);
    } finally {
      temps.release(temp);
    }
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

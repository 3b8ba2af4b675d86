import { unlinkSync } from "node:fs";
import {
  describeError,
  errnoCode,
  SourceError,
  utcDay,
  writeJsonAtomic,
  type FilerelayError,
  type Logger,
} from "@filerelay/core/internal";
import type { ConsumerConfig } from "./config.js";
import { moveNoClobber, removeFile, SourceReplacedError, type ErrorRecord } from "./disposer.js";
import { currentIdentity, sameIdentity, type Identity } from "./fileVersion.js";
import type { TrackedFile } from "./trackedFile.js";

/** What happens to a source file once it is published (DESIGN §1): chosen once, from the configuration. */
export type DispositionStrategy = "delete" | "archive" | "leave";

/** "superseded": the path holds another version than the one published; it was left for its own turn. */
export type Disposition = "deleted" | "archived" | "left" | "superseded";

export interface DisposeResult {
  disposition: Disposition;
  movedTo?: string;
}

/** DELETE_AFTER_PROCESSING wins over ARCHIVE_DIR; with neither, files stay in place. */
export function dispositionStrategy(
  config: Pick<ConsumerConfig, "DELETE_AFTER_PROCESSING" | "ARCHIVE_DIR">,
): DispositionStrategy {
  if (config.DELETE_AFTER_PROCESSING) return "delete";
  return config.ARCHIVE_DIR ? "archive" : "leave";
}

export interface DispositionOptions {
  config: ConsumerConfig;
  /** The absolute path of a path relative to INPUT_DIR. */
  absolute: (rel: string) => string;
  /** Told when a file's ready marker was disposed of with it. */
  onMarkerGone: (rel: string) => void;
  log: Logger;
}

/**
 * Disposes of published files (delete | archive | leave) and moves finally
 * failed ones to ERROR_DIR — always only the version that was read: a writer
 * may have replaced the path meanwhile (renamed a new version over it, or
 * rewritten it in place), and that newer version is left alone for its own
 * turn ("superseded").
 */
export class FileDisposition {
  readonly strategy: DispositionStrategy;
  readonly #config: ConsumerConfig;
  readonly #absolute: (rel: string) => string;
  readonly #onMarkerGone: (rel: string) => void;
  readonly #log: Logger;

  constructor(options: DispositionOptions) {
    this.#config = options.config;
    this.strategy = dispositionStrategy(options.config);
    this.#absolute = options.absolute;
    this.#onMarkerGone = options.onMarkerGone;
    this.#log = options.log;
  }

  /** After the PubAck (or finding the version already published). */
  async dispose(rec: TrackedFile, published: Identity): Promise<DisposeResult> {
    if (this.strategy === "leave") return { disposition: "left" };
    const src = this.#absolute(rec.rel);
    // A followed symlink is judged by its target (what was read), and the link itself is disposed of.
    const isLink = rec.target !== undefined;
    try {
      const current = currentIdentity(src, isLink);
      if (current === undefined) {
        // Already gone (another replica disposed of it, or the writer removed it).
        return { disposition: this.strategy === "delete" ? "deleted" : "archived" };
      }
      if (!sameIdentity(current, published)) return { disposition: "superseded" };
      if (this.strategy === "delete") {
        // Synchronous right after the check: the window for a replacement is one system call.
        try {
          unlinkSync(src);
        } catch (err) {
          if (errnoCode(err) !== "ENOENT") throw err;
        }
        await this.#disposeMarker(rec.rel, undefined);
        return { disposition: "deleted" };
      }
      let movedTo: string;
      try {
        movedTo = await moveNoClobber(src, `${this.#config.ARCHIVE_DIR}/${utcDay()}/${rec.rel}`, {
          ...(isLink ? {} : { expectIno: published.ino }),
        });
      } catch (err) {
        if (err instanceof SourceReplacedError) return { disposition: "superseded" };
        // Already gone (another replica archived it): nothing left to do.
        if (errnoCode(err) === "ENOENT") return { disposition: "archived" };
        throw err;
      }
      await this.#disposeMarker(rec.rel, movedTo);
      return { disposition: "archived", movedTo };
    } catch (err) {
      throw new SourceError("DISPOSE_FAILED", `could not dispose of ${rec.rel}`, { cause: err });
    }
  }

  /**
   * A file that finally failed: to ERROR_DIR/YYYY-MM-DD/<path> with a
   * `.error.json` (DESIGN §5). Undefined without ERROR_DIR or when the move
   * failed (logged); "superseded" when the path now holds another version.
   */
  async moveToErrorDir(rec: TrackedFile, err: FilerelayError): Promise<{ moved: string } | "superseded" | undefined> {
    const errorDir = this.#config.ERROR_DIR;
    if (!errorDir) return undefined;
    const src = this.#absolute(rec.rel);
    const dest = `${errorDir}/${utcDay()}/${rec.rel}`;
    const isLink = rec.target !== undefined;
    try {
      const current = currentIdentity(src, isLink);
      // A symlink refused or unreadable has no identity of its own to compare.
      if (current && !rec.refused && !sameIdentity(current, rec)) return "superseded";
      let moved: string;
      try {
        moved = await moveNoClobber(src, dest, isLink || rec.refused ? {} : { expectIno: rec.ino });
      } catch (moveErr) {
        if (moveErr instanceof SourceReplacedError) return "superseded";
        throw moveErr;
      }
      const record: ErrorRecord = {
        path: rec.rel,
        source: this.#config.SOURCE,
        reason: describeError(err),
        code: err.code,
        attempts: rec.attempts,
        firstAttemptAt: (rec.firstAttemptAt ?? new Date()).toISOString(),
        lastAttemptAt: (rec.lastAttemptAt ?? new Date()).toISOString(),
        size: rec.size,
        mtime: new Date(rec.mtimeMs).toISOString(),
        fingerprint: rec.fingerprint ?? null,
        fileId: rec.fileId ?? null,
        movedAt: new Date().toISOString(),
      };
      await writeJsonAtomic(`${moved}.error.json`, record);
      await this.#disposeMarker(rec.rel, moved);
      return { moved };
    } catch (moveErr) {
      if (errnoCode(moveErr) === "ENOENT") return undefined;
      this.#log.error({ err: moveErr, path: rec.rel }, "could not move file to ERROR_DIR");
      return undefined;
    }
  }

  /** The ready marker goes where its file went (or is removed with it). */
  async #disposeMarker(rel: string, movedTo: string | undefined): Promise<void> {
    const suffix = this.#config.READY_MARKER_SUFFIX;
    if (!suffix) return;
    const marker = `${this.#absolute(rel)}${suffix}`;
    try {
      if (movedTo) await moveNoClobber(marker, `${movedTo}${suffix}`);
      else await removeFile(marker);
    } catch (err) {
      if (errnoCode(err) !== "ENOENT") throw err;
    }
    this.#onMarkerGone(rel);
  }
}

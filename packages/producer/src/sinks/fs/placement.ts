import { createHash } from "node:crypto";
import { createReadStream, linkSync, lstatSync, unlinkSync } from "node:fs";
import { rename, unlink } from "node:fs/promises";
import { pipeline } from "node:stream/promises";
import { errnoCode, SinkError, type Envelope, type Logger } from "@filerelay/core/internal";
import type { ConflictMode } from "../../config.js";
import { resolveInside } from "../../organizer.js";
import {
  conflictCandidate,
  conflictError,
  decideConflict,
  MAX_CONFLICT_SUFFIX,
  type TargetState,
} from "../conflictPolicy.js";
import type { SinkWriteResult } from "../sink.js";

/**
 * Where a file version goes in OUTPUT_DIR under ON_CONFLICT: judged before
 * writing (precheck) and again when the complete temp file is moved into
 * place (commit), which never replaces a file unless ON_CONFLICT=overwrite.
 */
export interface Placement {
  /** The outcome when it is known before any byte is written (redelivery, skip, fail); else undefined. */
  precheck(target: string, path: string, envelope: Envelope): Promise<SinkWriteResult | undefined>;
  /** Moves the complete temp file to `target` or, under rename, its first free suffixed name. */
  commit(temp: string, target: string, path: string, envelope: Envelope): Promise<SinkWriteResult>;
}

export function createPlacement(root: string, mode: ConflictMode, log: Logger): Placement {
  const written = (location: string, envelope: Envelope): SinkWriteResult => ({
    outcome: "written",
    location,
    bytes: envelope.size,
  });
  const duplicate = (location: string, envelope: Envelope): SinkWriteResult => ({
    outcome: "duplicate",
    location,
    bytes: envelope.size,
  });
  const skipped = (path: string, location: string): SinkWriteResult => {
    log.info({ path, location }, "target exists with other content; ON_CONFLICT=skip");
    return { outcome: "skipped", location, bytes: 0 };
  };
  const candidate = (target: string, path: string, n: number) =>
    n === 0 ? target : resolveInside(root, conflictCandidate(path, n));

  async function precheck(target: string, path: string, envelope: Envelope): Promise<SinkWriteResult | undefined> {
    // Under rename, a redelivered envelope may already sit under a suffixed name.
    for (let n = 0; n <= MAX_CONFLICT_SUFFIX; n++) {
      const at = candidate(target, path, n);
      const decision = decideConflict(mode, await contentState(at, envelope));
      switch (decision.action) {
        case "skip-identical":
          return duplicate(at, envelope);
        case "skip":
          return skipped(path, at);
        case "fail":
          throw conflictError(decision.code, at, { location: at });
        case "rename-with-suffix":
          continue;
        case "write":
        case "overwrite":
          return undefined;
      }
    }
    return undefined;
  }

  /** link() refuses to replace, which makes rename/skip/fail race-free. */
  async function commit(temp: string, target: string, path: string, envelope: Envelope): Promise<SinkWriteResult> {
    if (mode === "overwrite") {
      // rename() replaces whatever is there, atomically.
      await rename(temp, target);
      return written(target, envelope);
    }
    let vanished = 0;
    for (let n = 0; n <= MAX_CONFLICT_SUFFIX; n++) {
      const at = candidate(target, path, n);
      if (await placeNoReplace(temp, at)) return written(at, envelope);
      // Someone (a peer producer, an operator) got there first.
      const decision = decideConflict(mode, await contentState(at, envelope));
      switch (decision.action) {
        case "skip-identical":
          await unlink(temp);
          return duplicate(at, envelope);
        case "skip":
          await unlink(temp);
          return skipped(path, at);
        case "fail":
          throw conflictError(decision.code, at, { location: at });
        case "rename-with-suffix":
          continue;
        case "write":
          // Gone again since link() found it: the same name is free to try once more.
          if (vanished++ < MAX_CONFLICT_SUFFIX) n--;
          continue;
        case "overwrite":
          await rename(temp, at);
          return written(at, envelope);
      }
    }
    throw new SinkError("WRITE_FAILED", `no free name for ${target} after ${MAX_CONFLICT_SUFFIX} suffixes`);
  }

  return { precheck, commit };
}

/** Renames temp → candidate unless candidate exists; false if it does. */
async function placeNoReplace(temp: string, candidate: string): Promise<boolean> {
  try {
    linkSync(temp, candidate);
  } catch (err) {
    const code = errnoCode(err);
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

/** What is at `path` for this file version (an fs target is never an interrupted attempt: temp files are). */
async function contentState(path: string, envelope: Envelope | undefined): Promise<TargetState> {
  const st = lstatSync(path, { throwIfNoEntry: false });
  if (!st) return "absent";
  if (!envelope || !st.isFile() || st.size !== envelope.size) return "other";
  const hash = createHash("sha256");
  await pipeline(createReadStream(path), hash);
  return hash.digest("hex") === envelope.sha256 ? "same" : "other";
}

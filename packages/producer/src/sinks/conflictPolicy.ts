import { SinkError, withNumericSuffix, type ErrorCode } from "@filerelay/core/internal";
import type { ConflictMode } from "../config.js";

/**
 * ON_CONFLICT, decided once for every sink: given the mode and what is at a
 * candidate name, what the sink does there. Sinks only find out what is
 * there (and, under `rename`, walk the candidates); the answer comes from here.
 */

/** What a candidate name holds, as far as this file version is concerned. */
export type TargetState =
  /** Nothing. */
  | "absent"
  /** This very content (same size and SHA-256): a redelivery already written. */
  | "same"
  /** An interrupted earlier attempt of this file version (its id, not its bytes): ours to replace. */
  | "ours-broken"
  /** Anything else. */
  | "other";

export type ConflictDecision =
  /** The name is free: write here, refusing to replace anything that appears meanwhile. */
  | { action: "write" }
  /** Replace what is there. */
  | { action: "overwrite" }
  /** Report a duplicate, write nothing. */
  | { action: "skip-identical" }
  /** ON_CONFLICT=skip: leave the other file, report skipped. */
  | { action: "skip" }
  /** ON_CONFLICT=rename: try the next suffixed name (withNumericSuffix). */
  | { action: "rename-with-suffix" }
  /** ON_CONFLICT=fail: a permanent error with this code. */
  | { action: "fail"; code: ErrorCode };

/** Most `-N` names tried under ON_CONFLICT=rename before giving up. */
export const MAX_CONFLICT_SUFFIX = 10_000;

// One object per decision: this runs for every file written.
const WRITE: ConflictDecision = Object.freeze({ action: "write" });
const OVERWRITE: ConflictDecision = Object.freeze({ action: "overwrite" });
const SKIP_IDENTICAL: ConflictDecision = Object.freeze({ action: "skip-identical" });
const SKIP: ConflictDecision = Object.freeze({ action: "skip" });
const RENAME: ConflictDecision = Object.freeze({ action: "rename-with-suffix" });
const FAIL: ConflictDecision = Object.freeze({ action: "fail", code: "CONFLICT" });

export function decideConflict(mode: ConflictMode, state: TargetState): ConflictDecision {
  switch (state) {
    case "absent":
      return WRITE;
    case "same":
      return SKIP_IDENTICAL;
    case "ours-broken":
      return OVERWRITE;
    case "other":
      switch (mode) {
        case "rename":
          return RENAME;
        case "overwrite":
          return OVERWRITE;
        case "skip":
          return SKIP;
        case "fail":
          return FAIL;
      }
  }
}

/** Candidate `n` for `path`: the name itself for 0, else its n-th suffixed name. */
export function conflictCandidate(path: string, n: number): string {
  return n === 0 ? path : withNumericSuffix(path, n);
}

/** The error of a `fail` decision at `location`. */
export function conflictError(code: ErrorCode, location: string, details: Record<string, unknown>): SinkError {
  return new SinkError(code, `${location} exists with different content and ON_CONFLICT=fail`, { details });
}

/** What the directory source knows of one path in INPUT_DIR. */

export type FileState =
  /** Not yet stable (or no ready marker yet). */
  | "waiting"
  /** Stable, queued for a worker. */
  | "ready"
  /** A worker holds it. */
  | "active"
  /** Waiting for a retry (failure backoff, or claimed by another replica). */
  | "backoff"
  /** Published (and left in place), or already published: nothing to do until it changes. */
  | "done"
  /** Finally failed and left in place (no ERROR_DIR): nothing to do until it changes. */
  | "failed";

export interface TrackedFile {
  rel: string;
  size: number;
  mtimeMs: number;
  ino: number;
  ctimeMs: number;
  /** A followed symlink: its resolved target. */
  target?: string | undefined;
  /** A refused symlink: why. */
  refused?: string | undefined;
  state: FileState;
  /** Bumped on every change; queue entries of older generations are stale. */
  gen: number;
  /** When this version (size, mtime) was first seen: the stability clock. */
  observedAt: number;
  /** ce-time: when this version was detected. */
  detectedAt: Date;
  attempts: number;
  firstAttemptAt?: Date | undefined;
  lastAttemptAt?: Date | undefined;
  fingerprint?: string | undefined;
  fileId?: string | undefined;
  /** Seen changing after it was found: a writer was at work, so it is checked for open writers before it is read. */
  sawWrites?: boolean | undefined;
  /** Another process was seen holding this version open for writing (logged once per version). */
  heldOpen?: boolean | undefined;
  /** Left in place: when its fingerprint record was last written (it expires after FINGERPRINT_TTL_MS). */
  recordedAt?: number | undefined;
  seenInScan: number;
  /** Announced by a file-system event (not found by a walk): workers favour it over a backlog. */
  fresh?: boolean | undefined;
}

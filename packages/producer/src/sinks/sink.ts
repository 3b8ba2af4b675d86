import type { Readable } from "node:stream";
import type { Envelope, Logger } from "@filerelay/core";

/**
 * A sink writes one file version somewhere durable. Implementations live one
 * per folder here (fs/, s3/) and are chosen by SINK from `sinkFactories`.
 *
 * Contract: `write` resolves only once the file is durably and completely in
 * place (fs: fsynced and renamed; s3: upload completed and verified). It never
 * leaves a partial under the final name. It throws a FilerelayError: permanent
 * codes are dead-lettered by the SDK at once, others are retried with backoff.
 */
export interface SinkWriteRequest {
  envelope: Envelope;
  /** Output path relative to OUTPUT_DIR / S3_PREFIX, '/'-separated, already sanitized and checked. */
  path: string;
  /** The payload bytes (inline or object store), verified against ce-filesize/ce-sha256 while read. */
  open(): Readable;
  /** Call while making progress on a long write, so the message is not redelivered (msg.working()). */
  progress(): void;
  signal: AbortSignal;
  log: Logger;
}

export interface SinkWriteResult {
  /** written: new output; duplicate: identical content already there (redelivery); skipped: ON_CONFLICT=skip. */
  outcome: "written" | "duplicate" | "skipped";
  /** Where the file is: an absolute path or s3://bucket/key. */
  location: string;
  bytes: number;
}

export interface Sink extends AsyncDisposable {
  readonly kind: string;
  /** Start-up work: stale temp cleanup, aborting stale multipart uploads, checks. */
  init(): Promise<void>;
  write(req: SinkWriteRequest): Promise<SinkWriteResult>;
  /** Throws with a reason when the sink cannot accept writes (for /readyz). */
  checkReady(): Promise<void>;
  close(): Promise<void>;
}

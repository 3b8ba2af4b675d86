import { statfs } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { jetstream } from "@nats-io/jetstream";
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/nats-core";
import type { NatsConnection } from "@nats-io/transport-node";
import { headersToRecord, type Envelope } from "./envelope.js";
import { describeError, FilerelayError, type ErrorCode } from "./errors.js";
import type { Logger } from "./logger.js";
import { cleanHeaderValue, cutToBytes, fitDeadLetter, type TruncatedPart } from "./deadLetterFit.js";
import { makeDirectory, writeFileAtomic, writeJsonAtomic } from "./fsUtil.js";
import { dlqSubject } from "./names.js";
import { utcDay } from "./retention.js";

/** Headers a dead letter carries on top of the original envelope headers. */
export const DLQ_HEADERS = {
  error: "filerelay-error",
  code: "filerelay-error-code",
  deliveries: "filerelay-deliveries",
  group: "filerelay-group",
  time: "filerelay-dead-lettered-at",
  streamSeq: "filerelay-stream-seq",
  /** Set when the dead letter is not the whole original: "headers", "body" or "headers,body". */
  truncated: "filerelay-truncated",
  /** With filerelay-truncated: the original header block and body sizes, in bytes. */
  originalHeaderBytes: "filerelay-original-header-bytes",
  originalBodyBytes: "filerelay-original-body-bytes",
} as const;

export interface DeadLetterOptions {
  /** Sink group: the subject is `filerelay.dlq.<group>`. */
  group: string;
  /** The original message's headers (copied as they are). */
  headers: MsgHdrs | Readonly<Record<string, string>> | undefined;
  /** The original body (the inline payload, or empty). */
  body: Uint8Array;
  code: ErrorCode;
  /** Human-readable reason (one line is kept). */
  error: string;
  deliveries: number;
  /**
   * Deduplication id in the DLQ stream: the same failed message dead-lettered
   * twice (e.g. the term() was lost and it came back) is stored once. The SDK
   * passes `<group>:<stream sequence>`.
   */
  msgId?: string;
  /** Sequence of the original message in its stream (recorded as a header). */
  streamSeq?: number;
  envelope?: Envelope;
  /** Also write ERROR_DIR/YYYY-MM-DD/<id>.envelope.json (+ <id>.payload). */
  errorDir?: string;
  /** Opens the payload for the error directory copy; its failure only skips the copy. */
  openPayload?: () => Readable;
  /** Free and total bytes of the error directory's filesystem (default: statfs); tests substitute it. */
  freeSpace?: (dir: string) => Promise<{ free: number; total: number }>;
  log?: Logger;
  timeoutMs?: number;
  now?: Date;
}

export interface DeadLetterResult {
  /** Sequence in the DLQ stream. */
  seq: number;
  duplicate: boolean;
  /** Files written under errorDir. */
  files: string[];
}

/** Longest filerelay-error value (long cause chains are cut). */
const ERROR_HEADER_MAX_BYTES = 1024;
/** max_payload when the server did not say (the nats-server default). */
const DEFAULT_MAX_PAYLOAD = 1024 * 1024;

/** A file-name-safe id: the envelope's ce-id when it is sane, else the dedup id. */
function errorFileId(opts: DeadLetterOptions, record: Record<string, string>): string {
  const candidate = opts.envelope?.id ?? record["ce-id"] ?? opts.msgId ?? `seq-${opts.streamSeq ?? Date.now()}`;
  const safe = candidate.replace(/[^A-Za-z0-9._-]/g, "_").slice(0, 100);
  return safe.replace(/^\.+/, "_") || "unknown";
}

/**
 * Publishes the message (headers + body) to `filerelay.dlq.<group>` (stream
 * `<STREAM>_DLQ`) with the filerelay-error, -error-code, -deliveries and -group
 * headers, and waits for the PubAck. What would make the broker refuse it
 * (a header block over 64 KiB, headers + body over max_payload, Nats-*
 * directives meant for the original stream) is trimmed (see fitDeadLetter)
 * and named in filerelay-truncated; the error directory copy keeps the whole
 * original. Throws FilerelayError DLQ_PUBLISH_FAILED
 * if the broker did not store it: the caller must then nak, never term(), so a
 * dead letter is never lost. The error directory copy is best effort (the DLQ
 * stream already holds the message) and is logged when it fails.
 */
export async function deadLetter(nc: NatsConnection, opts: DeadLetterOptions): Promise<DeadLetterResult> {
  const record =
    opts.headers && typeof (opts.headers as MsgHdrs).get === "function"
      ? headersToRecord(opts.headers as MsgHdrs)
      : { ...((opts.headers as Record<string, string> | undefined) ?? {}) };
  const now = opts.now ?? new Date();
  const own: [string, string][] = [
    [DLQ_HEADERS.error, cutToBytes(cleanHeaderValue(opts.error), ERROR_HEADER_MAX_BYTES)],
    [DLQ_HEADERS.code, opts.code],
    [DLQ_HEADERS.deliveries, String(opts.deliveries)],
    [DLQ_HEADERS.group, opts.group],
    [DLQ_HEADERS.time, now.toISOString()],
  ];
  if (opts.streamSeq !== undefined) own.push([DLQ_HEADERS.streamSeq, String(opts.streamSeq)]);
  // Our own dedup id replaces the envelope's (ce-id is shared by every group's dead letter).
  const fitted = fitDeadLetter(record, own, opts.body.length, {
    maxPayload: nc.info?.max_payload ?? DEFAULT_MAX_PAYLOAD,
  });
  const h = natsHeaders();
  for (const [k, v] of [...fitted.headers, ...own]) h.set(k, v);
  if (fitted.truncated.length > 0) {
    h.set(DLQ_HEADERS.truncated, fitted.truncated.join(","));
    h.set(DLQ_HEADERS.originalHeaderBytes, String(fitted.originalHeaderBytes));
    h.set(DLQ_HEADERS.originalBodyBytes, String(opts.body.length));
  }

  let seq: number;
  let duplicate: boolean;
  try {
    const js = jetstream(nc, { timeout: opts.timeoutMs ?? 10_000 });
    const ack = await js.publish(dlqSubject(opts.group), fitted.keepBody ? opts.body : new Uint8Array(0), {
      headers: h,
      ...(opts.msgId ? { msgID: opts.msgId } : {}),
    });
    seq = ack.seq;
    duplicate = ack.duplicate;
  } catch (err) {
    throw new FilerelayError("DLQ_PUBLISH_FAILED", `could not publish dead letter to ${dlqSubject(opts.group)}`, {
      cause: err,
    });
  }

  const files: string[] = [];
  if (opts.errorDir) {
    try {
      files.push(...(await writeErrorFiles(opts, record, now, fitted.truncated)));
    } catch (err) {
      opts.log?.warn(
        { err: describeError(err), errorDir: opts.errorDir },
        "dead letter stored in the DLQ stream, but writing the error directory copy failed",
      );
    }
  }
  return { seq, duplicate, files };
}

/** Free space an error directory copy must leave: the larger of this and ERROR_COPY_HEADROOM_RATIO of the filesystem. */
export const ERROR_COPY_HEADROOM_BYTES = 64 * 1024 * 1024;
const ERROR_COPY_HEADROOM_RATIO = 0.05;

/**
 * Whether a payload copy of `bytes` may go to the error directory: it is a
 * convenience next to the DLQ stream, so it must never be what fills a disk
 * the sink (or anything else) writes to.
 */
export function errorCopyFits(bytes: number, space: { free: number; total: number }): boolean {
  const headroom = Math.max(ERROR_COPY_HEADROOM_BYTES, space.total * ERROR_COPY_HEADROOM_RATIO);
  return space.free - bytes >= headroom;
}

async function fileSystemSpace(dir: string): Promise<{ free: number; total: number }> {
  const s = await statfs(dir);
  return { free: s.bavail * s.bsize, total: s.blocks * s.bsize };
}

async function writeErrorFiles(
  opts: DeadLetterOptions,
  record: Record<string, string>,
  now: Date,
  truncated: readonly TruncatedPart[],
): Promise<string[]> {
  const dir = join(opts.errorDir ?? "", utcDay(now));
  await makeDirectory(dir);
  const id = errorFileId(opts, record);
  const files: string[] = [];

  let payloadFile: string | undefined;
  let payloadNotCopied: string | undefined;
  const payloadPath = join(dir, `${id}.payload`);
  const fromObject = opts.envelope?.payload.kind === "object" && opts.openPayload !== undefined;
  const payloadBytes = fromObject ? (opts.envelope?.size ?? 0) : opts.body.length;
  try {
    if (payloadBytes > 0 || fromObject) {
      const space = await (opts.freeSpace ?? fileSystemSpace)(dir);
      if (!errorCopyFits(payloadBytes, space)) {
        payloadNotCopied = `not enough free space in the error directory (${space.free} bytes free)`;
        opts.log?.warn(
          { errorDir: opts.errorDir, bytes: payloadBytes, free: space.free },
          "dead letter payload not copied to the error directory: not enough free space",
        );
      } else if (fromObject && opts.openPayload) {
        await writeFileAtomic(payloadPath, opts.openPayload());
        payloadFile = payloadPath;
      } else {
        await writeFileAtomic(payloadPath, opts.body);
        payloadFile = payloadPath;
      }
    }
  } catch (err) {
    // The payload could not be read (missing object, digest mismatch...): the envelope still goes.
    payloadNotCopied = describeError(err);
    opts.log?.debug({ err: payloadNotCopied }, "dead letter payload not copied to the error directory");
  }
  if (payloadFile) files.push(payloadFile);

  const envelopePath = join(dir, `${id}.envelope.json`);
  const doc = {
    id,
    group: opts.group,
    code: opts.code,
    error: opts.error,
    deliveries: opts.deliveries,
    deadLetteredAt: now.toISOString(),
    streamSeq: opts.streamSeq,
    headers: record,
    bodyBytes: opts.body.length,
    payloadFile: payloadFile ? `${id}.payload` : null,
    ...(payloadNotCopied !== undefined ? { payloadNotCopied } : {}),
    // What the DLQ stream's copy lacks: this record (and the payload file) is the whole original.
    ...(truncated.length > 0 ? { dlqTruncated: truncated } : {}),
  };
  await writeJsonAtomic(envelopePath, doc);
  files.push(envelopePath);
  return files;
}

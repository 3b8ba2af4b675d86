import { createWriteStream } from "node:fs";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { jetstream } from "@nats-io/jetstream";
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/nats-core";
import type { NatsConnection } from "@nats-io/transport-node";
import { headersToRecord, type Envelope } from "./envelope.js";
import { describeError, FilerelayError, type ErrorCode } from "./errors.js";
import type { Logger } from "./logger.js";
import { dlqSubject } from "./names.js";

/** Headers a dead letter carries on top of the original envelope headers. */
export const DLQ_HEADERS = {
  error: "filerelay-error",
  code: "filerelay-error-code",
  deliveries: "filerelay-deliveries",
  group: "filerelay-group",
  time: "filerelay-dead-lettered-at",
  streamSeq: "filerelay-stream-seq",
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

/** Header values must be one line; long cause chains are cut. */
function headerValue(text: string, max = 1024): string {
  // eslint-disable-next-line no-control-regex -- stripping control characters is the point
  const one = text.replace(/[\u0000-\u001f\u007f]+/g, " ").trim();
  return one.length > max ? `${one.slice(0, max - 1)}…` : one;
}

/** A file-name-safe id: the envelope's ce-id when it is sane, else the dedup id. */
function errorFileId(opts: DeadLetterOptions, record: Record<string, string>): string {
  const candidate = opts.envelope?.id ?? record["ce-id"] ?? opts.msgId ?? `seq-${opts.streamSeq ?? Date.now()}`;
  const safe = candidate.replace(/[^A-Za-z0-9._-]/g, "_").slice(0, 100);
  return safe.replace(/^\.+/, "_") || "unknown";
}

/**
 * Publishes the message (headers + body) to `filerelay.dlq.<group>` (stream
 * `<STREAM>_DLQ`) with the filerelay-error, -error-code, -deliveries and -group
 * headers, and waits for the PubAck. Throws FilerelayError DLQ_PUBLISH_FAILED
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
  const h = natsHeaders();
  for (const [k, v] of Object.entries(record)) {
    // Our own dedup id replaces the envelope's: ce-id is shared by every group's dead letter.
    if (k.toLowerCase() === "nats-msg-id" || k.toLowerCase().startsWith("filerelay-")) continue;
    h.set(k, headerValue(v, 8192));
  }
  h.set(DLQ_HEADERS.error, headerValue(opts.error));
  h.set(DLQ_HEADERS.code, opts.code);
  h.set(DLQ_HEADERS.deliveries, String(opts.deliveries));
  h.set(DLQ_HEADERS.group, opts.group);
  h.set(DLQ_HEADERS.time, now.toISOString());
  if (opts.streamSeq !== undefined) h.set(DLQ_HEADERS.streamSeq, String(opts.streamSeq));

  let seq: number;
  let duplicate: boolean;
  try {
    const js = jetstream(nc, { timeout: opts.timeoutMs ?? 10_000 });
    const ack = await js.publish(dlqSubject(opts.group), opts.body, {
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
      files.push(...(await writeErrorFiles(opts, record, now)));
    } catch (err) {
      opts.log?.warn(
        { err: describeError(err), errorDir: opts.errorDir },
        "dead letter stored in the DLQ stream, but writing the error directory copy failed",
      );
    }
  }
  return { seq, duplicate, files };
}

async function writeErrorFiles(opts: DeadLetterOptions, record: Record<string, string>, now: Date): Promise<string[]> {
  const dir = join(opts.errorDir ?? "", now.toISOString().slice(0, 10));
  await mkdir(dir, { recursive: true });
  const id = errorFileId(opts, record);
  const files: string[] = [];

  let payloadFile: string | undefined;
  const payloadPath = join(dir, `${id}.payload`);
  const tmpPayload = `${payloadPath}.${process.pid}.tmp`;
  try {
    if (opts.envelope?.payload.kind === "object" && opts.openPayload) {
      await pipeline(opts.openPayload(), createWriteStream(tmpPayload));
      await rename(tmpPayload, payloadPath);
      payloadFile = payloadPath;
    } else if (opts.body.length > 0) {
      await writeFile(tmpPayload, opts.body);
      await rename(tmpPayload, payloadPath);
      payloadFile = payloadPath;
    }
  } catch (err) {
    // The payload could not be read (missing object, digest mismatch...): the envelope still goes.
    await rm(tmpPayload, { force: true });
    opts.log?.debug({ err: describeError(err) }, "dead letter payload not copied to the error directory");
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
  };
  const tmp = `${envelopePath}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(doc, null, 2)}\n`);
  await rename(tmp, envelopePath);
  files.push(envelopePath);
  return files;
}

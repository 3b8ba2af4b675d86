import { createHash, randomUUID } from "node:crypto";
import { Readable } from "node:stream";
import { jetstream, type JetStreamClient } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  CE_TYPE,
  envelopeToHeaders,
  envelopeToRecord,
  parseEnvelope,
  type Envelope,
  type EnvelopeExtensions,
  type PayloadRef,
} from "../envelope.js";
import { jetstreamNames } from "../names.js";
import { deletePayloadObject, putPayloadObject } from "../payload.js";
import type { StatusLedger } from "../status/ledger.js";
import { contentTypeFor } from "./contentType.js";

/** Files up to this size travel in the message body (INLINE_MAX_BYTES' default). */
export const DEFAULT_INLINE_MAX_BYTES = 256 * 1024;
/** How long a publish waits for its PubAck by default. */
export const DEFAULT_PUBLISH_TIMEOUT_MS = 5000;
/** A placeholder digest for validating an envelope before its content has been hashed. */
const UNKNOWN_SHA256 = "0".repeat(64);

/** What a file version is, as its source knows it (DESIGN §3). */
export interface FileMeta {
  /** ce-source: the publishing source's name. */
  source: string;
  /** ce-subject: the path relative to the source, '/'-separated. */
  subject: string;
  /** ce-filename (default: the last segment of `subject`). */
  filename?: string | undefined;
  /** ce-mtime (default: now). */
  mtime?: Date | undefined;
  /** ce-time: when the source detected or received it (default: now). */
  time?: Date | undefined;
  /** content-type (default: from the file name's extension). */
  contentType?: string | undefined;
  /** ce-id and Nats-Msg-Id: stable for the same version, so a republish is dropped (default: a random UUID). */
  id?: string | undefined;
  extensions?: EnvelopeExtensions | undefined;
}

export interface PublishFileOptions {
  /** The NATS subject to publish on (SUBJECT, default files.input). */
  subject?: string | undefined;
  /** The stream (default FILES): its payload bucket carries files over inlineMaxBytes. */
  stream?: string | undefined;
  /** Largest file sent in the message body (default 256 KiB). */
  inlineMaxBytes?: number | undefined;
  /** Object Store chunk size (PAYLOAD_CHUNK_BYTES). */
  chunkBytes?: number | undefined;
  /** The body never reuses a buffer it has yielded (e.g. a fresh buffer per read): uploaded without a copy. */
  freshBuffers?: boolean | undefined;
  /** PubAck timeout of the envelope publish (default 5 s). */
  timeoutMs?: number | undefined;
  signal?: AbortSignal | undefined;
  /** A JetStream client to reuse (one is made otherwise). */
  js?: JetStreamClient | undefined;
  /**
   * Runs after an Object Store upload finished and before the envelope is
   * published; throwing abandons the publish (the object is removed). A
   * source re-checks here that what it uploaded is still the version it meant.
   */
  beforePublish?: ((envelope: Envelope) => Promise<void> | void) | undefined;
  /** Bytes uploaded so far, while an Object Store upload runs. */
  onProgress?: ((bytes: number) => void) | undefined;
  /**
   * The envelope, when the caller already built it with buildEnvelope() for
   * exactly these bytes (inline: same id, size and ce-sha256): it is sent as
   * it is, not hashed and validated a second time. An envelope naming an
   * Object Store payload, with an empty body, references that existing
   * object: nothing is uploaded; the caller vouches that it holds these bytes
   * and keeps it alive (a stage passing a file on unchanged).
   */
  envelope?: Envelope | undefined;
  /**
   * The status ledger to record this file in (DESIGN §8): `received` while a
   * large file uploads (with byte progress), `published` after the PubAck.
   * A ledger failure never fails the publish; it is logged by the ledger.
   */
  status?: StatusLedger | undefined;
  /** The content's size when known beforehand (a file on disk): the total of the upload's byte progress. */
  expectedSize?: number | undefined;
}

export interface PublishFileResult {
  id: string;
  sha256: string;
  size: number;
  /** Sequence of the envelope in the stream. */
  seq: number;
  /** JetStream had this ce-id already (within its duplicate window) and dropped the publish. */
  duplicate: boolean;
  envelope: Envelope;
}

type Body = Uint8Array | Readable | AsyncIterable<Uint8Array>;

/**
 * The envelope a file version gets (DESIGN §3), validated as a sink would: a
 * name no sink could accept fails here, before anything is sent. `sha256` may
 * be left empty while the content is still to be hashed.
 */
export function buildEnvelope(
  meta: FileMeta,
  content: { size: number; sha256: string; payload: PayloadRef },
): Envelope {
  const slash = meta.subject.lastIndexOf("/");
  const filename = meta.filename ?? (slash < 0 ? meta.subject : meta.subject.slice(slash + 1));
  const now = new Date();
  const envelope: Envelope = {
    id: meta.id ?? randomUUID(),
    source: meta.source,
    type: CE_TYPE,
    time: meta.time ?? now,
    subject: meta.subject,
    contentType: meta.contentType ?? contentTypeFor(filename),
    filename,
    size: content.size,
    sha256: content.sha256,
    mtime: meta.mtime ?? now,
    payload: content.payload,
    ...(meta.extensions && Object.values(meta.extensions).some((v) => v !== undefined)
      ? { extensions: meta.extensions }
      : {}),
  };
  parseEnvelope(envelopeToRecord({ ...envelope, sha256: envelope.sha256 || UNKNOWN_SHA256 }));
  return envelope;
}

/**
 * Publishes one file version as an envelope and waits for its PubAck: the
 * only code that builds and publishes envelopes (DESIGN §7). Hashes the
 * content, sends it inline when it fits `inlineMaxBytes` or else streams it
 * into the Object Store under the ce-id first (never holding it whole), sets
 * `Nats-Msg-Id` to the ce-id so a republish of the same version is dropped,
 * and returns what was stored.
 */
export async function publishFile(
  nc: NatsConnection,
  body: Body,
  meta: FileMeta,
  options: PublishFileOptions = {},
): Promise<PublishFileResult> {
  const inlineMax = options.inlineMaxBytes ?? DEFAULT_INLINE_MAX_BYTES;
  const names = jetstreamNames({ STREAM: options.stream ?? "FILES", SUBJECT: options.subject ?? "files.input" });
  const js = options.js ?? jetstream(nc, { timeout: options.timeoutMs ?? DEFAULT_PUBLISH_TIMEOUT_MS });
  const to = options.subject ?? "files.input";
  const id = meta.id ?? randomUUID();
  const withId = { ...meta, id };

  // A reference to an object that is already stored: the envelope alone.
  const given = options.envelope;
  if (given?.payload.kind === "object" && given.id === id && body instanceof Uint8Array && body.length === 0) {
    const ack = await js.publish(to, body, { msgID: id, headers: envelopeToHeaders(given) });
    await options.status?.noteSource(given, "published", { detectedAt: given.time });
    return { id, sha256: given.sha256, size: given.size, seq: ack.seq, duplicate: ack.duplicate, envelope: given };
  }

  // Bytes, or a stream that turns out to fit: inline.
  const head = body instanceof Uint8Array ? { bytes: body, rest: undefined } : await readUpTo(body, inlineMax + 1);
  if (head.rest === undefined && head.bytes.length <= inlineMax) {
    const built = options.envelope;
    const envelope =
      built?.payload.kind === "inline" && built.id === id && built.size === head.bytes.length && built.sha256 !== ""
        ? built
        : buildEnvelope(withId, {
            size: head.bytes.length,
            sha256: createHash("sha256").update(head.bytes).digest("hex"),
            payload: { kind: "inline" },
          });
    const sha256 = envelope.sha256;
    const ack = await js.publish(to, head.bytes, { msgID: id, headers: envelopeToHeaders(envelope) });
    // Nothing to supersede: sent without waiting for the broker's reply (a small file's
    // record costs one message; the groups' entries, which are confirmed, make it delivered).
    await options.status?.noteSource(envelope, "published", { detectedAt: envelope.time, unconfirmed: true });
    return { id, sha256, size: envelope.size, seq: ack.seq, duplicate: ack.duplicate, envelope };
  }

  // Larger: the Object Store first, then the envelope that names it.
  const payload: PayloadRef = { kind: "object", bucket: names.payloadBucket, name: id };
  buildEnvelope(withId, { size: 0, sha256: "", payload });
  const source = head.rest ? prepend(head.bytes, head.rest) : Readable.from([head.bytes]);
  const status = options.status;
  const received =
    status !== undefined &&
    (await status.noteSource(
      {
        id,
        source: meta.source,
        subject: meta.subject,
        filename: meta.filename,
        contentType: meta.contentType,
        size: options.expectedSize ?? null,
        sha256: null,
        jobId: meta.extensions?.jobid ?? null,
        parentId: meta.extensions?.parentid ?? null,
      },
      "received",
      { detectedAt: meta.time ?? new Date() },
    ));
  const onProgress =
    status || options.onProgress
      ? (bytes: number) => {
          options.onProgress?.(bytes);
          status?.progress(id, bytes, options.expectedSize ?? null);
        }
      : undefined;
  const put = await putPayloadObject(nc, {
    bucket: names.payloadBucket,
    name: id,
    source,
    ...(options.chunkBytes !== undefined ? { chunkBytes: options.chunkBytes } : {}),
    ...(options.freshBuffers ? { freshBuffers: true } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
    ...(onProgress ? { onProgress } : {}),
  });
  const envelope = buildEnvelope(withId, { size: put.size, sha256: put.sha256, payload });
  try {
    await options.beforePublish?.(envelope);
  } catch (err) {
    await deletePayloadObject(nc, payload).catch(() => undefined);
    throw err;
  }
  const ack = await js.publish(to, new Uint8Array(0), { msgID: id, headers: envelopeToHeaders(envelope) });
  await status?.noteSource(envelope, "published", { detectedAt: envelope.time, supersede: received });
  return { id, sha256: put.sha256, size: put.size, seq: ack.seq, duplicate: ack.duplicate, envelope };
}

/** Reads at most `limit` bytes; `rest` is the iterator still holding what follows (undefined at the end). */
async function readUpTo(
  body: Readable | AsyncIterable<Uint8Array>,
  limit: number,
): Promise<{ bytes: Buffer; rest: AsyncIterator<Uint8Array> | undefined }> {
  const it = (body as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
  const parts: Buffer[] = [];
  let total = 0;
  while (total < limit) {
    const next = await it.next();
    if (next.done) return { bytes: Buffer.concat(parts, total), rest: undefined };
    const chunk = Buffer.from(next.value);
    parts.push(chunk);
    total += chunk.length;
  }
  return { bytes: Buffer.concat(parts, total), rest: it };
}

async function* prepend(first: Uint8Array, rest: AsyncIterator<Uint8Array>): AsyncGenerator<Uint8Array> {
  yield first;
  for (let next = await rest.next(); !next.done; next = await rest.next()) yield next.value;
}

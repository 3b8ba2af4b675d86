import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import {
  AckPolicy,
  DeliverPolicy,
  jetstream,
  jetstreamManager,
  JetStreamApiCodes,
  JetStreamApiError,
  type ConsumerConfig,
  type ConsumerMessages,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from "@nats-io/jetstream";
import { headers as natsHeaders, nanos, nuid } from "@nats-io/nats-core";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Envelope, PayloadRef } from "./envelope.js";
import { FilerelayError, PayloadError } from "./errors.js";

/**
 * Payload transport (DESIGN §1, issue 5): inline bodies and chunked JetStream
 * Object Store objects, both read through one verifying, backpressured
 * Readable. Objects are written and read in the Object Store wire format
 * (chunks on `$O.<bucket>.C.<nuid>`, meta on `$O.<bucket>.M.<b64url(name)>`),
 * so any NATS client can read what we write and vice versa, but with our own
 * code: nats.js `put()` publishes one chunk at a time (slow) and `get()` is an
 * unbounded push consumer that stalls after 16 chunks (nats.js issue #430).
 */

export const DEFAULT_PAYLOAD_CHUNK_BYTES = 128 * 1024;
/** Publishes kept in flight during an upload (bytes): pipelining without unbounded memory. */
const UPLOAD_IN_FLIGHT_BYTES = 4 * 1024 * 1024;
/** Chunks requested per pull while reading (bytes): the read-side buffer bound. */
const READ_BATCH_BYTES = 4 * 1024 * 1024;
const READ_FETCH_EXPIRES_MS = 5_000;
/** Consecutive read failures without progress before giving up (transiently). */
const READ_MAX_FAILURES = 8;
const READ_STALL_MS = 30_000;
const INLINE_SLICE_BYTES = 64 * 1024;
const DIGEST_PREFIX = "SHA-256=";

export interface PutPayloadOptions {
  bucket: string;
  /** Object name; the consumer uses the envelope's ce-id. */
  name: string;
  source: Readable | AsyncIterable<Uint8Array | string>;
  /** Chunk size (default 128 KiB, PAYLOAD_CHUNK_BYTES), capped at the server's max_payload. */
  chunkBytes?: number;
  signal?: AbortSignal;
  /** Called after each chunk is handed to NATS with the bytes uploaded so far. */
  onProgress?: (bytes: number) => void;
  /** Bytes of chunks published but not yet acknowledged (default 4 MiB): pipelining depth. */
  inFlightBytes?: number;
  /** Per-publish PubAck timeout (default 30 s). */
  timeoutMs?: number;
}

export interface PutPayloadResult {
  size: number;
  /** Hex SHA-256 of the whole content. */
  sha256: string;
  chunks: number;
  /** Id of the chunk subject `$O.<bucket>.C.<nuid>`. */
  nuid: string;
}

/** The Object Store meta record (JSON body of the meta message), as far as we use it. */
export interface PayloadObjectInfo {
  name: string;
  bucket: string;
  nuid: string;
  size: number;
  chunks: number;
  digest: string;
  mtime: string;
  deleted?: boolean;
  options?: { max_chunk_size?: number };
  metadata?: Record<string, string>;
}

export function objectStreamName(bucket: string): string {
  return `OBJ_${bucket}`;
}

export function objectChunkSubject(bucket: string, id: string): string {
  return `$O.${bucket}.C.${id}`;
}

/** An object name as one subject token (padded base64url), as every Object Store client encodes it. */
export function objectNameToken(name: string): string {
  return Buffer.from(name, "utf8").toString("base64").replace(/\+/g, "-").replace(/\//g, "_");
}

/** Meta subject: `$O.<bucket>.M.<objectNameToken(name)>`. */
export function objectMetaSubject(bucket: string, name: string): string {
  return `$O.${bucket}.M.${objectNameToken(name)}`;
}

/** Hex SHA-256 of an object's content from its meta record (undefined for a foreign digest form). */
export function objectSha256(info: PayloadObjectInfo): string | undefined {
  return info.metadata?.["filerelay-sha256"] ?? digestToHex(info.digest);
}

/**
 * Removes one revision of an object: its meta up to and including `metaSeq`
 * (so a newer upload under the same name survives), then that revision's
 * chunks. Meta first, so no reader finds a half-deleted object.
 */
export async function purgePayloadRevision(
  jsm: JetStreamManager,
  bucket: string,
  name: string,
  revision: { metaSeq: number; nuid: string },
): Promise<void> {
  const stream = objectStreamName(bucket);
  await jsm.streams.purge(stream, { filter: objectMetaSubject(bucket, name), seq: revision.metaSeq + 1 });
  await jsm.streams.purge(stream, { filter: objectChunkSubject(bucket, revision.nuid) });
}

function digestToHex(digest: string): string | undefined {
  if (!digest.startsWith(DIGEST_PREFIX)) return undefined;
  const raw = Buffer.from(digest.slice(DIGEST_PREFIX.length).replace(/-/g, "+").replace(/_/g, "/"), "base64");
  return raw.length === 32 ? raw.toString("hex") : undefined;
}

function hexToDigest(hex: string): string {
  const b64 = Buffer.from(hex, "hex").toString("base64").replace(/\+/g, "-").replace(/\//g, "_");
  return `${DIGEST_PREFIX}${b64}`;
}

function checkBucket(bucket: string): void {
  if (!/^[-\w]+$/.test(bucket)) throw new PayloadError("PAYLOAD_UPLOAD_FAILED", `invalid bucket name ${bucket}`);
}

function isStreamNotFound(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound;
}

/** The object's meta record, or null when the object (or the bucket) does not exist or is deleted. */
export async function readPayloadInfo(
  nc: NatsConnection,
  ref: { bucket: string; name: string },
  jsm?: JetStreamManager,
): Promise<PayloadObjectInfo | null> {
  const manager = jsm ?? (await jetstreamManager(nc));
  let stored;
  try {
    stored = await manager.streams.getMessage(objectStreamName(ref.bucket), {
      last_by_subj: objectMetaSubject(ref.bucket, ref.name),
    });
  } catch (err) {
    if (isStreamNotFound(err)) return null;
    throw err;
  }
  if (!stored) return null;
  const info = stored.json<PayloadObjectInfo>();
  return info.deleted ? null : info;
}

/**
 * Streams `source` into the Object Store (one pass, bounded memory), computing
 * size + SHA-256 (hex) as it goes. Chunk publishes are pipelined (a bounded
 * number awaiting their PubAck). Resolves only after the object's meta is
 * written; on failure the chunks already written are purged (best effort: the
 * payload janitor removes what is left) and nothing references them.
 *
 * Errors raised by `source` itself are rethrown unchanged (the caller knows its
 * source); NATS-side failures become PayloadError PAYLOAD_UPLOAD_FAILED; an
 * abort becomes PayloadError SHUTDOWN.
 */
export async function putPayloadObject(nc: NatsConnection, opts: PutPayloadOptions): Promise<PutPayloadResult> {
  const { bucket, name, source, signal, onProgress } = opts;
  checkBucket(bucket);
  if (!name) throw new PayloadError("PAYLOAD_UPLOAD_FAILED", "object name must not be empty");
  const timeout = opts.timeoutMs ?? 30_000;
  const maxPayload = nc.info?.max_payload ?? 1024 * 1024;
  const chunkBytes = Math.max(1024, Math.min(opts.chunkBytes ?? DEFAULT_PAYLOAD_CHUNK_BYTES, maxPayload));
  const maxInFlight = Math.max(1, Math.ceil((opts.inFlightBytes ?? UPLOAD_IN_FLIGHT_BYTES) / chunkBytes));

  let js: JetStreamClient;
  let jsm: JetStreamManager;
  let old: PayloadObjectInfo | null;
  try {
    jsm = await jetstreamManager(nc);
    js = jetstream(nc, { timeout });
    old = await readPayloadInfo(nc, { bucket, name }, jsm);
  } catch (err) {
    throw new PayloadError("PAYLOAD_UPLOAD_FAILED", `cannot reach object store ${bucket}`, { cause: err });
  }

  const id = nuid.next();
  const chunkSubject = objectChunkSubject(bucket, id);
  const hash = createHash("sha256");
  const inFlight: Promise<unknown>[] = [];
  let size = 0;
  let chunks = 0;
  let sourceError: { err: unknown } | undefined;

  const publishChunk = async (chunk: Buffer) => {
    hash.update(chunk);
    size += chunk.length;
    chunks++;
    const ack = js.publish(chunkSubject, chunk, { timeout });
    // Marked handled now; the rejection is observed when it is awaited below.
    ack.catch(() => undefined);
    inFlight.push(ack);
    if (inFlight.length >= maxInFlight) await inFlight.shift();
    onProgress?.(size);
  };

  try {
    let parts: Buffer[] = [];
    let partsLen = 0;
    const iterator = (source as AsyncIterable<Uint8Array | string>)[Symbol.asyncIterator]();
    for (;;) {
      signal?.throwIfAborted();
      let next: IteratorResult<Uint8Array | string>;
      try {
        next = await iterator.next();
      } catch (err) {
        sourceError = { err };
        throw err;
      }
      if (next.done) break;
      let piece =
        typeof next.value === "string"
          ? Buffer.from(next.value)
          : Buffer.from(next.value.buffer, next.value.byteOffset, next.value.byteLength);
      while (piece.length > 0) {
        const take = Math.min(chunkBytes - partsLen, piece.length);
        parts.push(piece.subarray(0, take));
        partsLen += take;
        piece = piece.subarray(take);
        if (partsLen === chunkBytes) {
          // Copy: the source may reuse its buffers after we yield.
          const chunk = Buffer.concat(parts, partsLen);
          parts = [];
          partsLen = 0;
          await publishChunk(chunk);
        }
      }
    }
    if (partsLen > 0) await publishChunk(Buffer.concat(parts, partsLen));
    while (inFlight.length > 0) await inFlight.shift();
    signal?.throwIfAborted();

    const sha256 = hash.digest("hex");
    const info: PayloadObjectInfo & { description: string } = {
      name,
      description: "",
      bucket,
      nuid: id,
      size,
      chunks,
      mtime: new Date().toISOString(),
      digest: hexToDigest(sha256),
      deleted: false,
      options: { max_chunk_size: chunkBytes },
      metadata: { "filerelay-sha256": sha256 },
    };
    const h = natsHeaders();
    // Rollup keeps only the newest meta per object name (as the Object Store does).
    h.set("Nats-Rollup", "sub");
    await js.publish(objectMetaSubject(bucket, name), JSON.stringify(info), { headers: h, timeout });

    if (old && old.nuid !== id) {
      // Replaced an object of the same name: its chunks are now unreferenced.
      await jsm.streams
        .purge(objectStreamName(bucket), { filter: objectChunkSubject(bucket, old.nuid) })
        .catch(() => undefined);
    }
    return { size, sha256, chunks, nuid: id };
  } catch (err) {
    await Promise.allSettled(inFlight);
    await jsm.streams.purge(objectStreamName(bucket), { filter: chunkSubject }).catch(() => undefined);
    if (sourceError) throw sourceError.err;
    if (signal?.aborted) {
      throw new PayloadError("SHUTDOWN", `upload of ${bucket}/${name} aborted`, { cause: signal.reason });
    }
    if (err instanceof FilerelayError) throw err;
    throw new PayloadError("PAYLOAD_UPLOAD_FAILED", `uploading ${bucket}/${name} failed after ${size} bytes`, {
      cause: err,
    });
  }
}

/**
 * Removes an object: its meta first (so no reader finds a half-deleted object),
 * then its chunks. Inline refs and missing objects are a no-op.
 */
export async function deletePayloadObject(nc: NatsConnection, ref: PayloadRef): Promise<void> {
  if (ref.kind !== "object") return;
  try {
    const jsm = await jetstreamManager(nc);
    const info = await readPayloadInfo(nc, ref, jsm);
    const stream = objectStreamName(ref.bucket);
    if (info) {
      await jsm.streams.purge(stream, { filter: objectMetaSubject(ref.bucket, ref.name) });
      await jsm.streams.purge(stream, { filter: objectChunkSubject(ref.bucket, info.nuid) });
    }
  } catch (err) {
    if (isStreamNotFound(err)) return;
    throw new PayloadError("PAYLOAD_READ_FAILED", `could not delete object ${ref.bucket}/${ref.name}`, {
      cause: err,
    });
  }
}

export interface OpenPayloadOptions {
  /** Buckets this deployment owns; an envelope naming another one is refused. Unset: any. */
  allowedBuckets?: readonly string[];
  signal?: AbortSignal;
  /** How long a read may wait for the broker without any chunk arriving before it fails (transient). */
  stallMs?: number;
}

/** The abort reason of a payload stream's own reader once the stream closed (one shared instance, no DOMException). */
const STREAM_CLOSED = new PayloadError("SHUTDOWN", "payload stream closed");

/**
 * Byte mode, and at most about one chunk buffered in the Readable: the
 * read-ahead is the reader's pull batch. A larger highWaterMark let several
 * chunks queue up, and the async iterator's read() then concatenated them (a
 * copy of every byte; `fromList` was 2.7 % of the producer's CPU on 1 GiB).
 */
const PAYLOAD_STREAM_OPTIONS = { objectMode: false, highWaterMark: 1 } as const;

/** Streams made by openPayload, and the envelope each one verifies its bytes against. */
const verifiedStreams = new WeakMap<Readable, Envelope>();

/**
 * True when `stream` was returned by openPayload for this envelope's file
 * version (same id, size and SHA-256): such a stream only ends (without error)
 * after every byte it handed out was counted and hashed and matched the
 * envelope. A sink that writes exactly the chunks it reads need not hash them
 * a second time (the fs sink: a second SHA-256 was 1 s of CPU per GiB).
 */
export function isVerifiedPayload(stream: Readable, envelope: Envelope): boolean {
  const verifies = verifiedStreams.get(stream);
  return (
    verifies !== undefined &&
    verifies.id === envelope.id &&
    verifies.size === envelope.size &&
    verifies.sha256 === envelope.sha256
  );
}

/**
 * One Readable for inline and object payloads alike. Verifies size ==
 * envelope.size and sha256 == envelope.sha256 while streaming, and errors the
 * stream with PayloadError PAYLOAD_SIZE_MISMATCH / PAYLOAD_DIGEST_MISMATCH
 * (permanent) before 'end' otherwise; PAYLOAD_MISSING if the object does not
 * exist; PAYLOAD_FOREIGN_BUCKET if the bucket is not in allowedBuckets;
 * PAYLOAD_READ_FAILED (transient) if the broker stays unreachable. Memory is
 * bounded: chunks are pulled a few MiB at a time, only as the reader consumes.
 */
export function openPayload(
  nc: NatsConnection,
  envelope: Envelope,
  body: Uint8Array,
  opts: OpenPayloadOptions = {},
): Readable {
  let stream: Readable;
  if (envelope.payload.kind === "inline") {
    // In memory: nothing to cancel on close, so no AbortController (aborting
    // one builds a DOMException, per file on the small-file hot path).
    stream = Readable.from(inlineChunks(envelope, body), PAYLOAD_STREAM_OPTIONS);
  } else {
    // Closing the stream (consumer done, failed or destroyed) stops the
    // object's reader: its pull and its ephemeral consumer.
    const closed = new AbortController();
    const signal = opts.signal ? AbortSignal.any([opts.signal, closed.signal]) : closed.signal;
    stream = Readable.from(objectChunks(nc, envelope, envelope.payload, opts, signal), PAYLOAD_STREAM_OPTIONS);
    stream.once("close", () => closed.abort(STREAM_CLOSED));
  }
  verifiedStreams.set(stream, envelope);
  if (opts.signal) {
    const outer = opts.signal;
    const onAbort = () => stream.destroy(outer.reason instanceof Error ? outer.reason : undefined);
    if (outer.aborted) onAbort();
    else {
      outer.addEventListener("abort", onAbort, { once: true });
      stream.once("close", () => outer.removeEventListener("abort", onAbort));
    }
  }
  return stream;
}

function sizeMismatch(envelope: Envelope, actual: number, what: string): PayloadError {
  return new PayloadError(
    "PAYLOAD_SIZE_MISMATCH",
    `${what} of ${envelope.id} is ${actual} bytes, ce-filesize says ${envelope.size}`,
    { details: { expected: envelope.size, actual } },
  );
}

function digestMismatch(envelope: Envelope, actual: string): PayloadError {
  return new PayloadError(
    "PAYLOAD_DIGEST_MISMATCH",
    `payload of ${envelope.id} has sha256 ${actual}, ce-sha256 says ${envelope.sha256}`,
    { details: { expected: envelope.sha256, actual } },
  );
}

/**
 * Fewer chunk bytes than the object's meta announces. The meta is written only
 * after every chunk was stored, so ask the stream (its leader) how many chunks
 * it holds: fewer than the meta says → the object really is truncated
 * (PAYLOAD_SIZE_MISMATCH, permanent); all there → our reader saw a replica
 * that has not caught up yet (seen right after a cluster node rejoined), which
 * is transient (PAYLOAD_READ_FAILED): the delivery is retried.
 */
async function shortRead(
  jsm: JetStreamManager,
  envelope: Envelope,
  ref: { bucket: string; name: string },
  info: PayloadObjectInfo,
  received: number,
): Promise<PayloadError> {
  const subject = objectChunkSubject(ref.bucket, info.nuid);
  let stored: number | undefined;
  try {
    const si = await jsm.streams.info(objectStreamName(ref.bucket), { subjects_filter: subject });
    stored = si.state.subjects?.[subject] ?? 0;
  } catch {
    stored = undefined;
  }
  if (stored !== undefined && stored < info.chunks) {
    return sizeMismatch(envelope, received, `object ${ref.bucket}/${ref.name}`);
  }
  return new PayloadError(
    "PAYLOAD_READ_FAILED",
    `object ${ref.bucket}/${ref.name}: read ${received} of ${info.size} bytes although the stream holds all ${info.chunks} chunks (a replica behind?); will retry`,
    { details: { expected: info.size, actual: received } },
  );
}

function* inlineChunks(envelope: Envelope, body: Uint8Array): Generator<Buffer> {
  if (body.length !== envelope.size) throw sizeMismatch(envelope, body.length, "inline body");
  const buf = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  const actual = createHash("sha256").update(buf).digest("hex");
  if (actual !== envelope.sha256) throw digestMismatch(envelope, actual);
  // Slices so a slow sink sees backpressure rather than one large push.
  for (let off = 0; off < buf.length; off += INLINE_SLICE_BYTES) {
    yield buf.subarray(off, Math.min(buf.length, off + INLINE_SLICE_BYTES));
  }
}

/**
 * Checks an object payload's reference against its meta record without reading
 * any chunk: allowed bucket, object present, size and digest as the envelope
 * says. Throws the permanent PayloadError codes (PAYLOAD_FOREIGN_BUCKET,
 * PAYLOAD_MISSING, PAYLOAD_SIZE_MISMATCH, PAYLOAD_DIGEST_MISMATCH), or the
 * transient PAYLOAD_READ_FAILED when the meta cannot be read. Cheap enough to
 * run before a sink reserves disk space for a size the envelope may lie about.
 */
export async function checkObjectPayload(
  nc: NatsConnection,
  envelope: Envelope,
  ref: { bucket: string; name: string },
  opts: { allowedBuckets?: readonly string[] | undefined; jsm?: JetStreamManager } = {},
): Promise<{ info: PayloadObjectInfo; jsm: JetStreamManager }> {
  if (opts.allowedBuckets && !opts.allowedBuckets.includes(ref.bucket)) {
    throw new PayloadError(
      "PAYLOAD_FOREIGN_BUCKET",
      `ce-payload names bucket ${ref.bucket}, this deployment reads only ${opts.allowedBuckets.join(", ")}`,
    );
  }
  let jsm: JetStreamManager;
  let info: PayloadObjectInfo | null;
  try {
    jsm = opts.jsm ?? (await jetstreamManager(nc));
    info = await readPayloadInfo(nc, ref, jsm);
  } catch (err) {
    throw new PayloadError("PAYLOAD_READ_FAILED", `cannot look up object ${ref.bucket}/${ref.name}`, { cause: err });
  }
  if (!info) throw new PayloadError("PAYLOAD_MISSING", `object ${ref.bucket}/${ref.name} does not exist`);
  if (info.size !== envelope.size) throw sizeMismatch(envelope, info.size, `object ${ref.bucket}/${ref.name}`);
  const metaHex = digestToHex(info.digest);
  if (metaHex !== undefined && metaHex !== envelope.sha256) throw digestMismatch(envelope, metaHex);
  return { info, jsm };
}

async function* objectChunks(
  nc: NatsConnection,
  envelope: Envelope,
  ref: { bucket: string; name: string },
  opts: OpenPayloadOptions,
  signal: AbortSignal,
): AsyncGenerator<Buffer> {
  const { info, jsm } = await checkObjectPayload(nc, envelope, ref, { allowedBuckets: opts.allowedBuckets });

  const hash = createHash("sha256");
  let received = 0;
  if (info.size > 0) {
    const reader = new OrderedChunkReader(
      nc,
      jsm,
      objectStreamName(ref.bucket),
      objectChunkSubject(ref.bucket, info.nuid),
      Math.max(2, Math.floor(READ_BATCH_BYTES / (info.options?.max_chunk_size ?? DEFAULT_PAYLOAD_CHUNK_BYTES))),
      opts.stallMs ?? READ_STALL_MS,
      signal,
    );
    try {
      for await (const m of reader.messages()) {
        const data = Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength);
        received += data.length;
        if (received > info.size) throw sizeMismatch(envelope, received, `object ${ref.bucket}/${ref.name}`);
        hash.update(data);
        if (data.length > 0) yield data;
        if (received === info.size) break;
        if (m.info.pending === 0) {
          // No further chunk is visible: the object is truncated, or (in a
          // cluster) our reader sits on a replica that has not caught up.
          throw await shortRead(jsm, envelope, ref, info, received);
        }
      }
    } finally {
      reader.close();
    }
  }
  if (received < info.size) throw await shortRead(jsm, envelope, ref, info, received);
  if (received !== envelope.size) throw sizeMismatch(envelope, received, `object ${ref.bucket}/${ref.name}`);
  const actual = hash.digest("hex");
  if (actual !== envelope.sha256) throw digestMismatch(envelope, actual);
}

/**
 * Our own ordered pull consumer (the workaround for nats.js #430): an
 * ephemeral ack-none consumer on one subject, pulled a batch at a time only
 * when the caller asks for more. A gap in delivery sequence, a lost consumer
 * (broker restart), a stall or an error recreates it from the last stream
 * sequence seen; after READ_MAX_FAILURES attempts without progress it fails
 * with PAYLOAD_READ_FAILED (transient, so the message is retried).
 */
export class OrderedChunkReader {
  private consumerName: string | undefined;
  private lastStreamSeq = 0;
  private lastDeliverySeq = 0;
  private stopCurrent: (() => void) | undefined;

  constructor(
    private readonly nc: NatsConnection,
    private readonly jsm: JetStreamManager,
    private readonly stream: string,
    /** "" reads the whole stream. */
    private readonly filterSubject: string,
    private readonly batch: number,
    private readonly stallMs: number,
    private readonly signal: AbortSignal,
    private readonly extraConfig: Partial<ConsumerConfig> = {},
  ) {}

  /** Creates the consumer; false when nothing (more) matches. */
  private async create(): Promise<boolean> {
    const ci = await this.jsm.consumers.add(this.stream, {
      ...this.extraConfig,
      ...(this.filterSubject ? { filter_subject: this.filterSubject } : {}),
      ack_policy: AckPolicy.None,
      ...(this.lastStreamSeq > 0
        ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: this.lastStreamSeq + 1 }
        : { deliver_policy: DeliverPolicy.All }),
      mem_storage: true,
      num_replicas: 1,
      // A reader paused by a slow sink for longer than this finds its consumer
      // gone and simply recreates it.
      inactive_threshold: nanos(60_000),
    });
    this.consumerName = ci.name;
    this.lastDeliverySeq = 0;
    return ci.num_pending > 0;
  }

  private drop(): void {
    const name = this.consumerName;
    this.consumerName = undefined;
    if (name) this.jsm.consumers.delete(this.stream, name).catch(() => undefined);
  }

  /**
   * Messages in stream order, each exactly once; ends only by the caller
   * breaking out. Pulls are pipelined: once half of a batch has been handed
   * out and the stream holds more than the rest of it, the next batch is
   * requested, so the broker is never idle waiting for our next pull (at most
   * two batches are buffered). The pull requests are served in order, so the
   * second batch's messages follow the first's; the delivery-sequence check
   * catches anything else.
   */
  async *messages(): AsyncGenerator<JsMsg> {
    const js = jetstream(this.nc);
    let failures = 0;
    for (;;) {
      if (this.signal.aborted) throw this.abortError();
      let progressed = false;
      try {
        if (!this.consumerName && !(await this.create())) return;
        const consumer = await js.consumers.get(this.stream, this.consumerName);
        const pull = () => {
          const p = consumer.fetch({ max_messages: this.batch, expires: READ_FETCH_EXPIRES_MS });
          p.catch(() => undefined);
          return p;
        };
        let nextPull: Promise<ConsumerMessages> | undefined = pull();
        while (nextPull) {
          const iter = await nextPull;
          nextPull = undefined;
          let stalled = false;
          let inBatch = 0;
          this.stopCurrent = () => {
            iter.stop();
            void nextPull?.then(
              (next) => next.stop(),
              () => undefined,
            );
          };
          const it = iter[Symbol.asyncIterator]();
          for (;;) {
            // The stall timer runs only while we wait for the broker, not while the reader is slow.
            const timer = setTimeout(() => {
              stalled = true;
              iter.stop();
            }, this.stallMs + READ_FETCH_EXPIRES_MS);
            let r: IteratorResult<JsMsg>;
            try {
              r = await it.next();
            } finally {
              clearTimeout(timer);
            }
            if (r.done) break;
            const m = r.value;
            inBatch++;
            if (m.info.deliverySequence !== this.lastDeliverySeq + 1) {
              throw new Error(
                `delivery gap: expected ${this.lastDeliverySeq + 1}, got ${m.info.deliverySequence}; recreating`,
              );
            }
            this.lastDeliverySeq = m.info.deliverySequence;
            // More in the stream than this batch still brings: ask for the next one now.
            if (!nextPull && inBatch * 2 >= this.batch && m.info.pending > this.batch - inBatch) nextPull = pull();
            if (m.info.streamSequence <= this.lastStreamSeq) continue;
            this.lastStreamSeq = m.info.streamSequence;
            progressed = true;
            failures = 0;
            yield m;
          }
          if (stalled) throw new Error(`no chunk arrived for ${this.stallMs} ms`);
        }
        this.stopCurrent = undefined;
        if (!progressed && this.consumerName) {
          // An empty fetch: the chunk stream may have ended (truncated object) or
          // the broker is slow; the caller decides via `pending` on the last message.
          const ci = await this.jsm.consumers.info(this.stream, this.consumerName);
          if (ci.num_pending === 0) return;
        }
      } catch (err) {
        this.stopCurrent?.();
        this.stopCurrent = undefined;
        if (this.signal.aborted) throw this.abortError();
        if (err instanceof FilerelayError) throw err;
        failures++;
        this.drop();
        if (failures >= READ_MAX_FAILURES) {
          throw new PayloadError(
            "PAYLOAD_READ_FAILED",
            `reading ${this.filterSubject} from ${this.stream} failed ${failures} times in a row`,
            { cause: err },
          );
        }
        await sleep(Math.min(250 * 2 ** (failures - 1), 4000), undefined, { signal: this.signal }).catch(
          () => undefined,
        );
      }
    }
  }

  private abortError(): PayloadError {
    return new PayloadError("SHUTDOWN", `reading ${this.filterSubject} was aborted`, { cause: this.signal.reason });
  }

  close(): void {
    this.stopCurrent?.();
    this.stopCurrent = undefined;
    this.drop();
  }
}

import { createHash } from "node:crypto";
import type { Readable } from "node:stream";
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { headers as natsHeaders, nuid } from "@nats-io/nats-core";
import type { NatsConnection } from "@nats-io/transport-node";
import { FilerelayError, PayloadError } from "../errors.js";
import { objectStreamName } from "../names.js";
import {
  DEFAULT_PAYLOAD_CHUNK_BYTES,
  hexToDigest,
  objectChunkSubject,
  objectMetaSubject,
  type PayloadObjectInfo,
} from "./objectFormat.js";
import { readPayloadInfo } from "./readInfo.js";

/** Publishes kept in flight during an upload (bytes): pipelining without unbounded memory. */
const UPLOAD_IN_FLIGHT_BYTES = 4 * 1024 * 1024;

export interface PutPayloadOptions {
  bucket: string;
  /** Object name; the consumer uses the envelope's ce-id. */
  name: string;
  source: Readable | AsyncIterable<Uint8Array | string>;
  /** Chunk size (default 1 MiB, PAYLOAD_CHUNK_BYTES), capped at the server's max_payload. */
  chunkBytes?: number;
  signal?: AbortSignal;
  /** Called after each chunk is handed to NATS with the bytes uploaded so far. */
  onProgress?: (bytes: number) => void;
  /** Bytes of chunks published but not yet acknowledged (default 4 MiB): pipelining depth. */
  inFlightBytes?: number;
  /** Per-publish PubAck timeout (default 30 s). */
  timeoutMs?: number;
  /**
   * The source never touches a buffer again once it has yielded it: a piece
   * that is exactly one chunk is published as it is instead of being copied
   * (a copy of every byte, and as much garbage for the collector).
   */
  freshBuffers?: boolean;
}

export interface PutPayloadResult {
  size: number;
  /** Hex SHA-256 of the whole content. */
  sha256: string;
  chunks: number;
  /** Id of the chunk subject `$O.<bucket>.C.<nuid>`. */
  nuid: string;
}

function checkBucket(bucket: string): void {
  if (!/^[-\w]+$/.test(bucket)) throw new PayloadError("PAYLOAD_UPLOAD_FAILED", `invalid bucket name ${bucket}`);
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

  // A copy, unless the source vouches for fresh buffers: it may reuse them after we yield.
  const ownChunk = (parts: Buffer[], len: number): Buffer =>
    parts.length === 1 && opts.freshBuffers ? parts[0]! : Buffer.concat(parts, len);
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
          const chunk = ownChunk(parts, partsLen);
          parts = [];
          partsLen = 0;
          await publishChunk(chunk);
        }
      }
    }
    if (partsLen > 0) await publishChunk(ownChunk(parts, partsLen));
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

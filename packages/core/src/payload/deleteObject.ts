import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { PayloadRef } from "../envelope.js";
import { PayloadError } from "../errors.js";
import { isStreamNotFound } from "../jetstreamErrors.js";
import { objectStreamName } from "../names.js";
import { objectChunkSubject, objectMetaSubject } from "./objectFormat.js";
import { readPayloadInfo } from "./readInfo.js";

/**
 * Removing objects. Always the meta first, then the chunks, so no reader finds
 * a half-deleted object.
 */

/**
 * Removes an object: its meta, then its chunks. Inline refs and missing
 * objects are a no-op.
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

/**
 * Removes one revision of an object: its meta up to and including `metaSeq`
 * (so a newer upload under the same name survives), then that revision's
 * chunks.
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

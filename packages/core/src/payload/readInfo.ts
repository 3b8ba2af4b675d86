import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { isStreamNotFound } from "../jetstreamErrors.js";
import { objectStreamName } from "../names.js";
import { objectMetaSubject, type PayloadObjectInfo } from "./objectFormat.js";

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

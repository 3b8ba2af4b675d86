import { setTimeout as sleep } from "node:timers/promises";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { parsePayloadRef, type Envelope } from "./envelope.js";
import { describeError } from "./errors.js";
import type { Logger } from "./logger.js";
import { objectStreamName, pinBucketName } from "./names.js";
import { purgePayloadRevision } from "./payload/deleteObject.js";
import { objectMetaSubject, objectNameToken, objectSha256, type PayloadObjectInfo } from "./payload/objectFormat.js";

/**
 * Fast release of payload objects (DESIGN §12): the sink that acknowledges an
 * envelope last removes its object within seconds. An interest-retention
 * stream drops a message once every group's durable has acknowledged (or
 * terminated) it, so "the envelope is no longer stored" means "every group is
 * done". A group that dead-lettered the envelope still needs the object for a
 * replay: it pins the object first, and a pinned object is left to the
 * periodic sweep, which reads the dead-letter stream itself.
 */

/** Default lifetime of a pin: the dead-letter retention it stands for. */
export const DEFAULT_PIN_MAX_AGE_MS = 30 * 24 * 60 * 60_000;

/**
 * When to look whether the envelope is gone, after the ack was confirmed (ms
 * from the previous look): the server removes an acknowledged message shortly
 * after it handled the ack, and through a raft round in a cluster.
 */
export const RELEASE_CHECK_DELAYS_MS = [0, 50, 200, 750, 2000] as const;

/**
 * A meta stored this long after the envelope is a newer upload under the same
 * name (a re-publish after a crash), not the one the envelope referenced. The
 * margin absorbs clock differences between the servers leading the two streams.
 */
export const REUPLOAD_MARGIN_MS = 2000;

/**
 * Once the envelope is gone, it must still be gone this much later: a broker
 * killed right after handling the ack may come back with the message (and the
 * group's ack floor) as they were on disk, and redeliver it.
 */
export const RELEASE_SETTLE_MS = 3000;

/** Key of the marker a release leaves in the pins bucket (beside the pins, which are object-name tokens). */
export function releasedMarkerKey(name: string): string {
  return `released.${objectNameToken(name)}`;
}

/** Release checks running at once; past that, objects are left to the sweep. */
const MAX_PENDING_RELEASES = 4096;

export type ReleaseVerdict =
  /** Every group is done and nothing pins it: remove this revision. */
  | "release"
  /** The envelope is still stored: another group has not acknowledged it yet. */
  | "referenced"
  /** A dead letter references it: the sweep decides, from the dead-letter stream. */
  | "pinned"
  /** No such object (already removed). */
  | "absent"
  /** The object under that name is not the revision this envelope referenced: left alone. */
  | "replaced";

export interface ReleaseState {
  envelopeStored: boolean;
  pinned: boolean;
  object: PayloadObjectInfo | null;
  /** The envelope's ce-sha256. */
  sha256: string;
  /** When the broker stored the envelope, and the object's meta (epoch ms). */
  envelopeTime: number;
  objectTime: number;
}

/** Whether an acknowledged envelope's object can go now. */
export function releaseVerdict(s: ReleaseState): ReleaseVerdict {
  if (s.envelopeStored) return "referenced";
  if (s.pinned) return "pinned";
  if (!s.object || s.object.deleted) return "absent";
  if (objectSha256(s.object) !== s.sha256 || s.objectTime > s.envelopeTime + REUPLOAD_MARGIN_MS) return "replaced";
  return "release";
}

/** The object a message's ce-payload header names in `bucket`, if any (undefined for inline or garbage). */
export function objectNameIn(headers: Readonly<Record<string, string>>, bucket: string): string | undefined {
  const value = headers["ce-payload"];
  if (!value) return undefined;
  try {
    const ref = parsePayloadRef(value);
    return ref.kind === "object" && ref.bucket === bucket ? ref.name : undefined;
  } catch {
    return undefined;
  }
}

export interface PayloadReleaserOptions {
  /** The envelope stream (interest retention). */
  stream: string;
  /** The payload bucket this deployment owns; objects elsewhere are never touched. */
  bucket: string;
  log: Logger;
}

export interface PayloadReleaser {
  /**
   * After a confirmed ack of the message at `seq`: removes the envelope's
   * object once the stream no longer holds the message (in the background).
   */
  afterAck(msg: { seq: number; time: number }, envelope: Envelope, log: Logger): void;
  /** Records that a dead letter references the object (throws when it could not be stored). */
  pin(name: string, group: string): Promise<void>;
  /** Is the message still in the stream? undefined when the broker could not say. */
  isStored(seq: number): Promise<boolean | undefined>;
  /** Was this object released after every group had acknowledged its envelope? (false when unknown) */
  wasReleased(name: string): Promise<boolean>;
  /** Stops pending checks (their objects are left to the sweep) and waits for removals under way. */
  close(): Promise<void>;
}

export function createPayloadReleaser(nc: NatsConnection, opts: PayloadReleaserOptions): PayloadReleaser {
  const { stream, bucket } = opts;
  const closing = new AbortController();
  const pending = new Set<Promise<void>>();
  let jsmP: Promise<JetStreamManager> | undefined;
  let pinsP: Promise<KV> | undefined;
  const jsm = () =>
    (jsmP ??= jetstreamManager(nc).catch((err: unknown) => {
      jsmP = undefined;
      throw err;
    }));
  const pins = () =>
    (pinsP ??= new Kvm(nc).open(pinBucketName(stream)).catch((err: unknown) => {
      pinsP = undefined;
      throw err;
    }));

  const isStored = async (seq: number): Promise<boolean | undefined> => {
    try {
      return (await (await jsm()).streams.getMessage(stream, { seq })) !== null;
    } catch {
      return undefined;
    }
  };

  const isPinned = async (name: string): Promise<boolean> => {
    const entry = await (await pins()).get(objectNameToken(name));
    return entry !== null && entry.operation === "PUT";
  };

  const release = async (
    { seq, time }: { seq: number; time: number },
    envelope: Envelope,
    name: string,
    log: Logger,
  ): Promise<void> => {
    let stored: boolean | undefined = true;
    for (const delay of RELEASE_CHECK_DELAYS_MS) {
      if (delay > 0) await sleep(delay, undefined, { signal: closing.signal });
      stored = await isStored(seq);
      if (stored !== true) break;
    }
    // Still gone after a while: not an ack the broker will forget in a crash.
    if (stored === false) {
      await sleep(RELEASE_SETTLE_MS, undefined, { signal: closing.signal });
      stored = await isStored(seq);
    }
    // Unknown (broker unreachable) counts as stored: the sweep decides later.
    if (stored !== false) {
      log.debug({ object: name }, "payload object kept: another group has not acknowledged its envelope");
      return;
    }
    const manager = await jsm();
    const meta = await manager.streams.getMessage(objectStreamName(bucket), {
      last_by_subj: objectMetaSubject(bucket, name),
    });
    const object = meta ? meta.json<PayloadObjectInfo>() : null;
    const verdict = releaseVerdict({
      envelopeStored: false,
      pinned: await isPinned(name),
      object,
      sha256: envelope.sha256,
      envelopeTime: time,
      objectTime: meta?.time.getTime() ?? 0,
    });
    if (verdict !== "release" || !meta || !object) {
      log.debug({ object: name, verdict }, "payload object not released");
      return;
    }
    // The marker first: a redelivery the broker still makes (it lost the acks in
    // a crash) then finds it and is acknowledged, not dead-lettered as missing.
    await (await pins()).put(releasedMarkerKey(name), JSON.stringify({ name, seq, at: new Date().toISOString() }));
    await purgePayloadRevision(manager, bucket, name, { metaSeq: meta.seq, nuid: object.nuid });
    log.debug({ object: name, size: object.size }, "payload object released: every group is done");
  };

  return {
    afterAck(msg, envelope, log) {
      const ref = envelope.payload;
      if (ref.kind !== "object" || ref.bucket !== bucket || closing.signal.aborted) return;
      if (pending.size >= MAX_PENDING_RELEASES) return;
      const p = release(msg, envelope, ref.name, log)
        .catch((err: unknown) => {
          if (!closing.signal.aborted) {
            log.warn(
              { object: ref.name, err: describeError(err) },
              "releasing the payload object failed; the sweep will",
            );
          }
        })
        .finally(() => pending.delete(p));
      pending.add(p);
    },
    async pin(name, group) {
      await (await pins()).put(objectNameToken(name), JSON.stringify({ name, group, at: new Date().toISOString() }));
    },
    isStored,
    async wasReleased(name) {
      try {
        const entry = await (await pins()).get(releasedMarkerKey(name));
        return entry !== null && entry.operation === "PUT";
      } catch {
        return false;
      }
    },
    async close() {
      closing.abort(new Error("payload releaser closed"));
      await Promise.all([...pending]);
    },
  };
}

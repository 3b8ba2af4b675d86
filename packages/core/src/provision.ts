import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type ConsumerConfig,
  type JetStreamManager,
  type StreamConfig,
  type StreamInfo,
} from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { Objm } from "@nats-io/obj";
import type { NatsConnection } from "@nats-io/transport-node";
import { DEFAULT_DLQ_MAX_AGE_MS } from "./config.js";
import { describeError, NatsError } from "./errors.js";
import type { Logger } from "./logger.js";
import { isConsumerNotFound, isCreateRace, isStreamNotFound } from "./jetstreamErrors.js";
import { jetstreamNames, kvStreamName, type JetStreamNames } from "./names.js";
import { DEFAULT_PIN_MAX_AGE_MS } from "./payloadRelease.js";

const NS_PER_MS = 1_000_000;

export interface ProvisionConfig {
  STREAM: string;
  SUBJECT: string;
  STREAM_REPLICAS: number;
}

export interface ProvisionOptions {
  log: Logger;
  /** Durable consumers (sink groups) to create if missing. */
  groups?: readonly string[];
  /**
   * How long a delivered message may stay unacknowledged before redelivery:
   * a new group gets it; an existing one is raised to it, or lowered only
   * while idle (see groupAckWait). Unset: a new group gets 30 s, an existing
   * one keeps its value.
   */
  ackWaitMs?: number;
  /** Also create the consumer-side KV buckets (fingerprints, claims). */
  sourceBuckets?: boolean;
  /** How long an unrefreshed publish claim lives (claims bucket max age). */
  claimTtlMs?: number;
  /** How long a fingerprint record lives unless rewritten (fingerprint bucket max age; 0 = forever). */
  fingerprintTtlMs?: number;
  /** How long JetStream remembers Nats-Msg-Id values to drop duplicate publishes. */
  duplicateWindowMs?: number;
  /** How long a dead letter's pin on its payload object lives: the dead-letter retention (default 30 days). */
  pinMaxAgeMs?: number;
  /**
   * Limits of the DLQ stream, applied when it is created and also when it
   * exists with others (updated in place). Unset: a new DLQ stream gets
   * DEFAULT_DLQ_MAX_AGE_MS and no byte limit, an existing one is left as is.
   */
  dlqLimits?: DlqLimits;
}

export interface DlqLimits {
  maxAgeMs: number;
  /** Unset = no byte limit. */
  maxBytes?: number | undefined;
}

export interface Provisioned {
  names: JetStreamNames;
  /** What was created or updated (empty on a no-op re-run). */
  changes: string[];
}

export const DEFAULT_ACK_WAIT_MS = 30_000;
export const DEFAULT_CLAIM_TTL_MS = 120_000;
export const DEFAULT_FINGERPRINT_TTL_MS = 7 * 24 * 3_600_000;
export const DEFAULT_DUPLICATE_WINDOW_MS = 120_000;

/** The durable consumer config of a sink group (shared by every member). */
export function groupConsumerConfig(group: string, subject: string, ackWaitMs = DEFAULT_ACK_WAIT_MS) {
  return {
    durable_name: group,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    filter_subject: subject,
    ack_wait: ackWaitMs * NS_PER_MS,
    // Retries are counted and dead-lettered by the sink itself (MAX_DELIVER),
    // so the server must never silently stop redelivering.
    max_deliver: -1,
    max_ack_pending: 10_000,
  } satisfies Partial<ConsumerConfig>;
}

/**
 * Creates or updates everything a deployment needs (DESIGN §6). Idempotent:
 * a second run changes nothing, and nothing is ever deleted or purged. Works
 * against nats-server 2.9 (no 2.10+ stream features are used).
 */
export async function provision(
  nc: NatsConnection,
  config: ProvisionConfig,
  options: ProvisionOptions,
): Promise<Provisioned> {
  const { log } = options;
  const names = jetstreamNames(config);
  const changes: string[] = [];
  // Replicas that start together provision together: a create that loses the
  // race finds the object made by the winner when every step re-reads.
  for (let attempt = 1; ; attempt++) {
    try {
      await provisionOnce(nc, config, options, names, changes);
      break;
    } catch (err) {
      if (attempt < PROVISION_ATTEMPTS && (err instanceof StreamCreateError || isCreateRace(err))) {
        log.debug({ err, attempt }, "another replica created a JetStream object first; re-reading");
        continue;
      }
      if (err instanceof NatsError) throw err;
      throw new NatsError("PROVISION_FAILED", provisionFailure(names.stream, err), {
        cause: err instanceof StreamCreateError ? err.cause : err,
      });
    }
  }
  for (const change of changes) log.info({ change }, "provisioned");
  return { names, changes };
}

const PROVISION_ATTEMPTS = 3;

function provisionFailure(stream: string, err: unknown): string {
  if (err instanceof StreamCreateError) {
    return (
      `could not provision JetStream objects for stream ${stream}: creating stream ${err.stream} ` +
      `(${err.subjects.join(", ")}) still fails after ${PROVISION_ATTEMPTS} tries: ${describeError(err.cause)}; ` +
      "another stream may already hold those subjects: list streams (nats stream ls) and set STREAM / SUBJECT " +
      "to match it or to subjects no other stream covers"
    );
  }
  return `could not provision JetStream objects for stream ${stream}`;
}

/** A stream add the server refused as taken (isCreateRace), with what was being created. */
class StreamCreateError extends Error {
  constructor(
    readonly stream: string,
    readonly subjects: readonly string[],
    cause: unknown,
  ) {
    super(`creating stream ${stream}: ${describeError(cause)}`, { cause });
  }
}

async function provisionOnce(
  nc: NatsConnection,
  config: ProvisionConfig,
  options: ProvisionOptions,
  names: JetStreamNames,
  changes: string[],
): Promise<void> {
  const { log } = options;
  const jsm = await jetstreamManager(nc);
  await ensureStream(
    jsm,
    {
      name: names.stream,
      subjects: names.streamSubjects,
      retention: RetentionPolicy.Interest,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
      num_replicas: config.STREAM_REPLICAS,
      duplicate_window: (options.duplicateWindowMs ?? DEFAULT_DUPLICATE_WINDOW_MS) * NS_PER_MS,
      allow_direct: true,
    },
    config.SUBJECT,
    changes,
    log,
  );
  await ensureStream(
    jsm,
    {
      name: names.dlqStream,
      subjects: names.dlqSubjects,
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
      num_replicas: config.STREAM_REPLICAS,
      allow_direct: true,
      // Dead letters must not grow forever: the oldest go first (DiscardPolicy.Old).
      max_age: (options.dlqLimits?.maxAgeMs ?? DEFAULT_DLQ_MAX_AGE_MS) * NS_PER_MS,
      max_bytes: options.dlqLimits?.maxBytes ?? -1,
    },
    undefined,
    changes,
    log,
    options.dlqLimits ? ["max_age", "max_bytes"] : [],
  );
  for (const group of options.groups ?? []) {
    await ensureGroup(jsm, names.stream, groupConsumerConfig(group, config.SUBJECT, options.ackWaitMs), {
      explicitAckWait: options.ackWaitMs !== undefined,
      changes,
    });
  }
  // Object Store: the consumer writes payloads, producers read them.
  const objm = new Objm(nc);
  if (!(await bucketExists(jsm, names.payloadStream))) {
    await objm.create(names.payloadBucket, {
      storage: StorageType.File,
      replicas: config.STREAM_REPLICAS,
      description: "filerelay payloads over INLINE_MAX_BYTES",
    });
    changes.push(`created object store ${names.payloadBucket}`);
  }
  // A pin lives as long as the dead letter that needs its payload.
  const pinMaxAgeMs = options.pinMaxAgeMs ?? options.dlqLimits?.maxAgeMs ?? DEFAULT_PIN_MAX_AGE_MS;
  await ensurePayloadBookkeeping(nc, jsm, names, config.STREAM_REPLICAS, pinMaxAgeMs, changes);
  if (options.sourceBuckets) {
    const kvm = new Kvm(nc);
    const fingerprintTtlMs = options.fingerprintTtlMs ?? DEFAULT_FINGERPRINT_TTL_MS;
    if (!(await bucketExists(jsm, names.fingerprintStream))) {
      await kvm.create(names.fingerprintBucket, {
        history: 1,
        storage: StorageType.File,
        replicas: config.STREAM_REPLICAS,
        ttl: fingerprintTtlMs,
        description: "filerelay: fingerprints of published file versions",
      });
      changes.push(`created KV ${names.fingerprintBucket}`);
    } else {
      // Older deployments created it without a max age: every record was kept forever.
      await ensureMaxAge(jsm, names.fingerprintStream, fingerprintTtlMs, changes);
    }
    if (!(await bucketExists(jsm, names.claimStream))) {
      await kvm.create(names.claimBucket, {
        history: 1,
        storage: StorageType.File,
        replicas: config.STREAM_REPLICAS,
        ttl: options.claimTtlMs ?? DEFAULT_CLAIM_TTL_MS,
        description: "filerelay: in-progress publish claims",
      });
      changes.push(`created KV ${names.claimBucket}`);
    }
  }
}

/**
 * The KV buckets of the payload lifecycle: pins (objects dead letters still
 * reference, kept as long as dead letters are) and leases (one periodic sweep
 * per interval across replicas).
 */
async function ensurePayloadBookkeeping(
  nc: NatsConnection,
  jsm: JetStreamManager,
  names: JetStreamNames,
  replicas: number,
  pinMaxAgeMs: number,
  changes: string[],
): Promise<void> {
  const kvm = new Kvm(nc);
  const pins = names.pinBucket;
  const pinsStream = kvStreamName(pins);
  let pinsInfo: StreamInfo | undefined;
  try {
    pinsInfo = await jsm.streams.info(pinsStream);
  } catch (err) {
    if (!isStreamNotFound(err)) throw err;
  }
  if (!pinsInfo) {
    await kvm.create(pins, {
      history: 1,
      storage: StorageType.File,
      replicas,
      ttl: pinMaxAgeMs,
      description: "filerelay: payload objects that dead letters reference",
    });
    changes.push(`created KV ${pins}`);
  } else if (pinsInfo.config.max_age !== 0 && pinsInfo.config.max_age < pinMaxAgeMs * NS_PER_MS) {
    // Only ever lengthened: a pin outliving its dead letter merely defers the object to the sweep.
    await jsm.streams.update(pinsStream, { ...pinsInfo.config, max_age: pinMaxAgeMs * NS_PER_MS });
    changes.push(`updated KV ${pins}: max_age`);
  }
  const leases = names.leaseBucket;
  if (!(await bucketExists(jsm, kvStreamName(leases)))) {
    await kvm.create(leases, {
      history: 1,
      storage: StorageType.File,
      replicas,
      description: "filerelay: leases of periodic jobs shared by replicas",
    });
    changes.push(`created KV ${leases}`);
  }
}

async function bucketExists(jsm: JetStreamManager, stream: string): Promise<boolean> {
  try {
    await jsm.streams.info(stream);
    return true;
  } catch (err) {
    if (isStreamNotFound(err)) return false;
    throw err;
  }
}

/** Sets a stream's max age in place when it differs (expiring data is the point; nothing else changes). */
async function ensureMaxAge(jsm: JetStreamManager, stream: string, maxAgeMs: number, changes: string[]): Promise<void> {
  const info = await jsm.streams.info(stream);
  const wanted = maxAgeMs * NS_PER_MS;
  if (info.config.max_age === wanted) return;
  await jsm.streams.update(stream, { ...info.config, max_age: wanted });
  changes.push(`updated ${stream}: max_age ${maxAgeMs} ms`);
}

async function ensureStream(
  jsm: JetStreamManager,
  wanted: Partial<StreamConfig> & { name: string; subjects: string[] },
  mustCover: string | undefined,
  changes: string[],
  log: Logger,
  /** Limits set to `wanted`'s values on an existing stream too (never by purging: the server applies them). */
  enforce: readonly ("max_age" | "max_bytes")[] = [],
): Promise<void> {
  let info: StreamInfo;
  try {
    info = await jsm.streams.info(wanted.name);
  } catch (err) {
    if (!isStreamNotFound(err)) throw err;
    try {
      await jsm.streams.add(wanted);
    } catch (addErr) {
      if (!isCreateRace(addErr)) throw addErr;
      throw new StreamCreateError(wanted.name, wanted.subjects, addErr);
    }
    changes.push(`created stream ${wanted.name} (${wanted.subjects.join(", ")})`);
    return;
  }
  const current = info.config;
  if (wanted.retention && current.retention !== wanted.retention) {
    // Retention cannot change in place, and recreating would lose data: say so.
    log.warn(
      { stream: wanted.name, retention: current.retention, expected: wanted.retention },
      "stream exists with a different retention policy; leaving it as is",
    );
  }
  const update: Partial<StreamConfig> = {};
  const subjects = current.subjects ?? [];
  const missing = wanted.subjects.filter((s) => !subjects.includes(s));
  if (missing.length > 0 && !(mustCover && subjects.some((s) => subjectMatches(s, mustCover)))) {
    update.subjects = [...subjects, ...missing];
  }
  if (wanted.num_replicas !== undefined && current.num_replicas !== wanted.num_replicas) {
    update.num_replicas = wanted.num_replicas;
  }
  if (wanted.duplicate_window !== undefined && current.duplicate_window < wanted.duplicate_window) {
    update.duplicate_window = wanted.duplicate_window;
  }
  for (const limit of enforce) {
    if (wanted[limit] !== undefined && current[limit] !== wanted[limit]) update[limit] = wanted[limit];
  }
  if (Object.keys(update).length > 0) {
    await jsm.streams.update(wanted.name, { ...current, ...update });
    changes.push(`updated stream ${wanted.name}: ${Object.keys(update).join(", ")}`);
  }
}

/**
 * The ack_wait a starting member leaves on its group's existing durable.
 * Every member paces its keep-alive from the durable's value, and a running
 * member learns of a change only when it next re-reads the durable, so a
 * change must never leave a running member pacing slower than the durable:
 * raising is always safe (running members are merely early until they
 * re-read); lowering is done only while no member holds or waits for a
 * message (an idle or stopped group). Without a wanted value (a service that
 * provisions groups it does not consume, or an SDK user who set none) the
 * durable keeps what it has.
 */
export function groupAckWait(current: number, wanted: number | undefined, groupActive: boolean): number {
  if (wanted === undefined || wanted === current) return current;
  if (wanted > current) return wanted;
  return groupActive ? current : wanted;
}

async function ensureGroup(
  jsm: JetStreamManager,
  stream: string,
  wanted: ReturnType<typeof groupConsumerConfig>,
  opts: { explicitAckWait: boolean; changes: string[] },
): Promise<void> {
  const { changes } = opts;
  try {
    const info = await jsm.consumers.info(stream, wanted.durable_name);
    const c = info.config;
    if (c.filter_subject && c.filter_subject !== wanted.filter_subject) {
      throw new NatsError(
        "PROVISION_FAILED",
        `durable consumer ${wanted.durable_name} on ${stream} filters ${c.filter_subject}, but SUBJECT is ${wanted.filter_subject}; ` +
          "a group reads one subject: use another group name (PRODUCER_GROUP, TRANSFORM_GROUP, SINK_GROUPS) or fix SUBJECT / OUTPUT_SUBJECT",
      );
    }
    // A waiting pull request or an unacknowledged message means a member is running.
    const active = info.num_waiting > 0 || info.num_ack_pending > 0;
    const current = c.ack_wait ?? DEFAULT_ACK_WAIT_MS * NS_PER_MS;
    const ackWait = groupAckWait(current, opts.explicitAckWait ? wanted.ack_wait : undefined, active);
    if (ackWait !== current || c.max_deliver !== wanted.max_deliver) {
      await jsm.consumers.update(stream, wanted.durable_name, {
        ack_wait: ackWait,
        max_deliver: wanted.max_deliver,
        max_ack_pending: wanted.max_ack_pending,
      });
      changes.push(`updated group ${wanted.durable_name}`);
    }
  } catch (err) {
    if (!isConsumerNotFound(err)) throw err;
    await jsm.consumers.add(stream, wanted);
    changes.push(`created group ${wanted.durable_name} on ${stream} (${wanted.filter_subject})`);
  }
}

/** Does subject `s` match a pattern like `files.>` or `files.*`? */
export function subjectMatches(pattern: string, s: string): boolean {
  const p = pattern.split(".");
  const t = s.split(".");
  for (let i = 0; i < p.length; i++) {
    if (p[i] === ">") return t.length > i;
    if (i >= t.length) return false;
    if (p[i] !== "*" && p[i] !== t[i]) return false;
  }
  return p.length === t.length;
}

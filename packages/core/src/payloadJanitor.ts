import { randomUUID } from "node:crypto";
import { AckPolicy, jetstreamManager, RetentionPolicy, type JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { parsePayloadRef } from "./envelope.js";
import { describeError } from "./errors.js";
import type { Logger } from "./logger.js";
import { createLease } from "./lease.js";
import { jetstreamNames } from "./names.js";
import { purgePayloadRevision } from "./payload/deleteObject.js";
import {
  objectChunkFilter,
  objectChunkId,
  objectMetaFilter,
  objectMetaSubject,
  type PayloadObjectInfo,
} from "./payload/objectFormat.js";
import { OrderedChunkReader } from "./payload/orderedReader.js";

export interface PayloadJanitorOptions {
  config: { STREAM: string; SUBJECT: string };
  log: Logger;
  /** Run every this many ms (default 5 min); 0 = only when runOnce() is called. */
  intervalMs?: number;
  /**
   * Minimum age before an unreferenced object or an orphan chunk set is
   * removed (default 15 min). It covers the gap between an upload finishing
   * and its envelope being published, and uploads still in progress (a chunk
   * set is judged by its last chunk).
   */
  graceMs?: number;
  /**
   * Share the periodic runs with every other process of the deployment: a
   * run starts only under the sweep lease (KV bucket `<STREAM>_leases`), so
   * of N replicas one sweeps per interval. runOnce() ignores the lease.
   */
  lease?: boolean;
}

export interface PayloadJanitorRun {
  /** Objects removed because no envelope references them any more. */
  deleted: number;
  /** Chunk sets purged that no object meta points to (interrupted uploads). */
  orphanChunksPurged: number;
  /** Objects kept because an envelope in FILES or FILES_DLQ still references them. */
  referenced: number;
  /**
   * Envelopes every group had already acknowledged but the interest stream
   * still held (nats-server 2.9 can keep them after a crash), removed.
   */
  staleEnvelopesRemoved: number;
}

export interface PayloadJanitor extends AsyncDisposable {
  runOnce(): Promise<PayloadJanitorRun>;
  close(): Promise<void>;
}

export const DEFAULT_JANITOR_INTERVAL_MS = 5 * 60_000;
export const DEFAULT_JANITOR_GRACE_MS = 15 * 60_000;
const SCAN_BATCH = 256;
const SCAN_STALL_MS = 30_000;

interface LiveObject {
  info: PayloadObjectInfo;
  /** Stream sequence of the meta message (purging stops there, so a newer upload survives). */
  metaSeq: number;
}

/**
 * The periodic sweep of the payload bucket, and the authority on what may go
 * (the SDK's fast release handles the common case within seconds of the last
 * ack; see payloadRelease.ts): an object goes when neither the envelope
 * stream (an interest-retention stream drops a message once every group acked
 * it) nor the dead-letter stream (kept so `dlq replay` still finds the
 * payload) holds an envelope naming it, and it is older than the grace
 * period. This removes objects orphaned by a crash between upload and publish
 * and objects whose last group is not an SDK sink. Also purges chunks of
 * uploads that never got their meta (consumer crashed mid-upload).
 */
export function createPayloadJanitor(nc: NatsConnection, opts: PayloadJanitorOptions): PayloadJanitor {
  const names = jetstreamNames(opts.config);
  const bucket = names.payloadBucket;
  const objStream = names.payloadStream;
  const graceMs = opts.graceMs ?? DEFAULT_JANITOR_GRACE_MS;
  const intervalMs = opts.intervalMs ?? DEFAULT_JANITOR_INTERVAL_MS;
  const log = opts.log.child({ component: "payload-janitor", bucket });
  const closing = new AbortController();
  const holder = randomUUID();
  const lease = opts.lease
    ? createLease(nc, {
        bucket: names.leaseBucket,
        key: "payload-sweep",
        holder,
        durationMs: intervalMs,
      })
    : undefined;
  let running: Promise<PayloadJanitorRun> | undefined;
  let timer: NodeJS.Timeout | undefined;

  const scan = async (
    jsm: JetStreamManager,
    stream: string,
    filter: string,
    headersOnly: boolean,
    onMsg: (m: { seq: number; headers: Record<string, string>; data: Uint8Array }) => void,
  ): Promise<boolean> => {
    try {
      await jsm.streams.info(stream);
    } catch {
      return false;
    }
    const reader = new OrderedChunkReader(
      nc,
      jsm,
      stream,
      filter,
      SCAN_BATCH,
      SCAN_STALL_MS,
      closing.signal,
      headersOnly ? { headers_only: true } : {},
    );
    try {
      for await (const m of reader.messages()) {
        const headers: Record<string, string> = {};
        for (const [k, v] of m.headers ?? []) if (v[0] !== undefined) headers[k] = v[0];
        onMsg({ seq: m.info.streamSequence, headers, data: m.data });
        if (m.info.pending === 0) break;
      }
    } finally {
      reader.close();
    }
    return true;
  };

  const runOnceInner = async (): Promise<PayloadJanitorRun> => {
    const result: PayloadJanitorRun = { deleted: 0, orphanChunksPurged: 0, referenced: 0, staleEnvelopesRemoved: 0 };
    const jsm = await jetstreamManager(nc);
    const now = Date.now();

    // 1. Objects first: an envelope published after this point names an object
    //    younger than the grace period, so it cannot be judged stale below.
    const live = new Map<string, LiveObject>();
    const tombstones: { name: string; seq: number; mtime: string }[] = [];
    const exists = await scan(jsm, objStream, objectMetaFilter(bucket), false, (m) => {
      const info = JSON.parse(Buffer.from(m.data).toString("utf8")) as PayloadObjectInfo;
      if (info.deleted) tombstones.push({ name: info.name, seq: m.seq, mtime: info.mtime });
      else live.set(info.name, { info, metaSeq: m.seq });
    });
    if (!exists) return result;

    // 2. References: the DLQ before FILES, the opposite direction to a replay
    //    (DLQ → FILES), so an envelope being moved is seen in one of them.
    const referenced = new Set<string>();
    const collect = (m: { headers: Record<string, string> }) => {
      const value = m.headers["ce-payload"];
      if (!value) return;
      try {
        const ref = parsePayloadRef(value);
        if (ref.kind === "object" && ref.bucket === bucket) referenced.add(ref.name);
      } catch {
        /* not an envelope we understand: it references nothing */
      }
    };
    await scan(jsm, names.dlqStream, "", true, collect);
    // An envelope at or below every group's ack floor is done, even when the
    // interest stream still holds it: nats-server 2.9 can keep acknowledged
    // messages after a SIGKILL (seen in the chaos run). It must not pin its
    // object forever; it is removed, as the server should have done.
    const acked = await acknowledgedThrough(jsm, names.stream);
    const stale: number[] = [];
    await scan(jsm, names.stream, "", true, (m) => {
      if (m.seq <= acked) stale.push(m.seq);
      else collect(m);
    });
    for (const seq of stale) {
      if (await jsm.streams.deleteMessage(names.stream, seq, false).catch(() => false)) result.staleEnvelopesRemoved++;
    }
    if (stale.length > 0) {
      log.warn(
        { stream: names.stream, ackedThrough: acked, removed: result.staleEnvelopesRemoved },
        "removed envelopes every group had acknowledged but the stream still held",
      );
    }

    // 3. Unreferenced objects older than the grace period.
    for (const [name, obj] of live) {
      if (referenced.has(name)) {
        result.referenced++;
        continue;
      }
      const age = now - Date.parse(obj.info.mtime);
      if (!(age > graceMs)) continue;
      // Only up to this revision: a re-upload under the same name survives.
      await purgePayloadRevision(jsm, bucket, name, { metaSeq: obj.metaSeq, nuid: obj.info.nuid });
      result.deleted++;
      log.info(
        { object: name, size: obj.info.size, ageMs: age },
        "payload object removed by the sweep: no envelope references it",
      );
    }
    for (const t of tombstones) {
      if (now - Date.parse(t.mtime) > graceMs) {
        await jsm.streams.purge(objStream, { filter: objectMetaSubject(bucket, t.name), seq: t.seq + 1 });
      }
    }

    // 4. Orphan chunk sets: chunks whose nuid no live meta names, idle past the grace period.
    const liveNuids = new Set([...live.values()].map((o) => o.info.nuid));
    const si = await jsm.streams.info(objStream, { subjects_filter: objectChunkFilter(bucket) });
    for (const subject of Object.keys(si.state.subjects ?? {})) {
      const id = objectChunkId(bucket, subject);
      if (id === undefined || liveNuids.has(id)) continue;
      const last = await jsm.streams.getMessage(objStream, { last_by_subj: subject });
      if (!last || now - last.time.getTime() <= graceMs) continue;
      const purged = await jsm.streams.purge(objStream, { filter: subject });
      result.orphanChunksPurged++;
      log.info(
        { chunkSubject: subject, chunks: purged.purged },
        "orphan payload chunks purged (upload never finished)",
      );
    }
    return result;
  };

  const runOnce = (): Promise<PayloadJanitorRun> => {
    // One run at a time; a caller arriving during a run gets that run's result.
    running ??= runOnceInner().finally(() => {
      running = undefined;
    });
    return running;
  };

  /** A scheduled run: under the lease when shared (undefined when another process holds it). */
  const tick = async (): Promise<PayloadJanitorRun | undefined> => {
    if (lease && !(await lease.tryAcquire())) return undefined;
    log.debug({ holder, intervalMs, graceMs }, "payload sweep started");
    // A sweep outlasting the lease keeps it, so no other replica starts a second one.
    const renew = lease
      ? setInterval(() => void lease.renew().catch(() => undefined), Math.max(100, intervalMs / 2))
      : undefined;
    try {
      return await runOnce();
    } finally {
      clearInterval(renew);
    }
  };

  const schedule = () => {
    if (intervalMs <= 0 || closing.signal.aborted) return;
    timer = setTimeout(() => {
      tick()
        .then((r) => {
          if (r) log.debug(r, "payload sweep done");
        })
        .catch((err: unknown) => {
          if (!closing.signal.aborted) log.warn({ err: describeError(err) }, "payload janitor run failed; will retry");
        })
        .finally(schedule);
    }, intervalMs);
    timer.unref();
  };
  schedule();

  const close = async () => {
    closing.abort(new Error("payload janitor closed"));
    if (timer) clearTimeout(timer);
    await running?.catch(() => undefined);
  };
  return { runOnce, close, [Symbol.asyncDispose]: close };
}

/**
 * The stream sequence up to which every acknowledging consumer of an interest
 * stream has acknowledged everything (0 when unknown, for another retention,
 * or with no such consumer: nothing is then treated as done).
 */
async function acknowledgedThrough(jsm: JetStreamManager, stream: string): Promise<number> {
  try {
    const si = await jsm.streams.info(stream);
    if (si.config.retention !== RetentionPolicy.Interest) return 0;
    let floor: number | undefined;
    for await (const ci of jsm.consumers.list(stream)) {
      // An ack-none consumer is done with what it was delivered.
      const done = ci.config.ack_policy === AckPolicy.None ? ci.delivered.stream_seq : ci.ack_floor.stream_seq;
      floor = Math.min(floor ?? Number.MAX_SAFE_INTEGER, done);
    }
    return floor ?? 0;
  } catch {
    return 0;
  }
}

/** The sweep as a running service starts it: every PAYLOAD_SWEEP_INTERVAL_MS, one replica of the deployment per interval. */
export function startPayloadSweep(
  nc: NatsConnection,
  config: { STREAM: string; SUBJECT: string; PAYLOAD_SWEEP_INTERVAL_MS: number; PAYLOAD_ORPHAN_GRACE_MS: number },
  log: Logger,
): PayloadJanitor {
  return createPayloadJanitor(nc, {
    config,
    log,
    intervalMs: config.PAYLOAD_SWEEP_INTERVAL_MS,
    graceMs: config.PAYLOAD_ORPHAN_GRACE_MS,
    lease: true,
  });
}

import { createHash } from "node:crypto";
import { mkdir, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { DeliverPolicy, jetstream, type ConsumerMessages, type JetStreamClient } from "@nats-io/jetstream";
import {
  backoffDelay,
  describeError,
  fileVersionId,
  publishFile,
  type Logger,
  type NatsConnection,
  type StatusLedger,
} from "@filerelay/core/internal";
import type { BatcherConfig } from "./config.js";
import {
  IntentStore,
  intentBucketName,
  intentKey,
  OwnedSequences,
  type BatchRecord,
  type WindowIntent,
} from "./intents.js";
import type { BatcherMetrics } from "./metrics.js";
import { batchExtension, batchFileName, NameOrdinals, subjectKey } from "./naming.js";
import { renderBatch } from "./render.js";
import { closeBeforeAdding, rotationDue, type RotationReason } from "./rotation.js";
import { readSpool, SpoolWriter } from "./spool.js";
import { Window, type Runs } from "./window.js";

/**
 * The batcher: events from the durable on EVENTS_STREAM go into the open
 * window (spooled per key); a window closes by time, size or shutdown; closed
 * windows are published one after the other (intent record → publishFile()
 * per batch → record marked published → events acknowledged).
 */

const ACK = new TextEncoder().encode("+ACK");
const WPI = new TextEncoder().encode("+WPI");

interface ClosedBatch extends BatchRecord {
  spoolPath: string;
}

interface ClosedWindow {
  key: string;
  closedAt: Date;
  reason: RotationReason;
  runs: Runs;
  batches: ClosedBatch[];
  /** Ack subjects (none for a window rebuilt after a restart: its events come back and are owned). */
  replies: string[];
  touchedAt: number;
}

export interface Batcher extends AsyncDisposable {
  /** Stops consuming and publishes the open window and every closed one (up to SHUTDOWN_TIMEOUT_MS). */
  close(): Promise<void>;
  /**
   * Stops at once without publishing anything more (the lease is gone: another
   * replica works now). Events not yet in a published batch come back to it
   * after EVENTS_ACK_WAIT_MS; close() afterwards does nothing more.
   */
  abandon(): Promise<void>;
}

export interface BatcherDeps {
  config: BatcherConfig;
  nc: NatsConnection;
  log: Logger;
  metrics: BatcherMetrics;
  /** Where each batch file is recorded (DESIGN §8); unset with STATUS=off. */
  status?: StatusLedger | undefined;
  /** Throws when this replica may no longer start publishing a window (it lost its group's lease). */
  guard?: () => void;
}

/** The ce-id of a batch: the same window and key always give the same id. */
export function batchId(stream: string, group: string, runs: Runs, key: string | undefined): string {
  const digest = createHash("sha256")
    .update(runs.map(([a, b]) => `${a}-${b}`).join(","))
    .digest("hex");
  return fileVersionId(`batch:${stream}:${group}:${digest}:${key ?? ""}`);
}

export async function startBatcher(deps: BatcherDeps): Promise<Batcher> {
  const { config, nc, log, metrics } = deps;
  const js = jetstream(nc, { timeout: 10_000 });
  const spoolDir = config.BATCH_SPOOL_DIR;
  // Leftovers of a crash: their events were never acknowledged and come back.
  await rm(spoolDir, { recursive: true, force: true });
  await mkdir(spoolDir, { recursive: true, mode: 0o700 });
  const intents = await IntentStore.open(
    nc,
    intentBucketName(config.EVENTS_STREAM, config.BATCH_GROUP),
    config.STREAM_REPLICAS,
  );
  const owned = new OwnedSequences();
  const ordinals = new NameOrdinals();
  // Published records outlive two ack waits: a lost ack comes back after one.
  const retainMs = 2 * config.EVENTS_ACK_WAIT_MS + 60_000;
  const windowOptions = { format: config.BATCH_FORMAT, root: config.BATCH_XML_ROOT, spoolDir };
  let window = new Window(windowOptions);
  const queue: ClosedWindow[] = [];
  let stopping = false;
  const stopController = new AbortController();

  const publishWindow = async (w: ClosedWindow, recovered: boolean): Promise<void> => {
    const intent: WindowIntent = {
      v: 1,
      state: "pending",
      closedAt: w.closedAt.toISOString(),
      reason: w.reason,
      runs: w.runs,
      batches: w.batches.map(({ spoolPath: _s, ...b }) => b),
    };
    // Not a new window without the lease; one being published finishes (its acks prevent a second copy).
    deps.guard?.();
    if (!recovered) await retrying("record the window", () => intents.put(w.key, intent));
    for (const b of w.batches) {
      const started = Date.now();
      const result = await retrying(
        `publish ${b.name}`,
        () =>
          publishFile(
            nc,
            renderBatch(readSpool(b.spoolPath), {
              format: config.BATCH_FORMAT,
              convert: config.BATCH_CONVERT,
              root: config.BATCH_XML_ROOT,
              raw: b.raw,
            }),
            {
              source: config.SOURCE,
              subject: b.name,
              id: b.id,
              time: w.closedAt,
              mtime: w.closedAt,
            },
            {
              js,
              subject: config.SUBJECT,
              stream: config.STREAM,
              inlineMaxBytes: config.INLINE_MAX_BYTES,
              chunkBytes: config.PAYLOAD_CHUNK_BYTES,
              status: deps.status,
            },
          ),
        () => metrics.publishFailures.inc(),
      );
      metrics.batch({ reason: w.reason, raw: b.raw, bytes: b.bytes, events: b.events });
      log.info(
        {
          fileId: result.id,
          path: b.name,
          size: result.size,
          sha256: result.sha256,
          events: b.events,
          eventBytes: b.bytes,
          reason: w.reason,
          raw: b.raw,
          duplicate: result.duplicate,
          recovered,
          durationMs: Date.now() - started,
          outcome: "published",
        },
        "batch published",
      );
    }
    const expiresAt = Date.now() + retainMs;
    await retrying("mark the window published", () => intents.put(w.key, { ...intent, state: "published", expiresAt }));
    owned.add(w.key, w.runs, expiresAt);
    for (const reply of w.replies) nc.publish(reply, ACK);
    // The PONG says the server has the acks; a lost one is recognised as owned when it comes back.
    await nc.flush().catch((err: unknown) => log.warn({ err: describeError(err) }, "ack flush failed"));
    await Promise.all(w.batches.map((b) => rm(b.spoolPath, { force: true })));
  };

  /** Retries `fn` with capped backoff until it succeeds or the batcher is stopped hard. */
  async function retrying<T>(what: string, fn: () => Promise<T>, onFailure?: () => void): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        onFailure?.();
        if (stopController.signal.aborted) throw err;
        const delay = backoffDelay(Math.min(attempt - 1, 5), { baseMs: 500, maxMs: 15_000, jitter: 0.2 });
        log.warn({ err: describeError(err), attempt, retryInMs: delay }, `could not ${what}; retrying`);
        await sleep(delay, undefined, { signal: stopController.signal }).catch(() => undefined);
      }
    }
  }

  // --- recovery: windows recorded by an earlier run ---------------------------------
  for (const { key, intent } of await intents.list()) {
    if (intent.state === "published") {
      const expiresAt = intent.expiresAt ?? Date.now() + retainMs;
      owned.add(key, intent.runs, expiresAt);
      continue;
    }
    log.info({ window: key, batches: intent.batches.length }, "republishing a window recorded before a restart");
    const rebuilt = await rebuildWindow(js, config, key, intent, spoolDir);
    await publishWindow(rebuilt, true);
  }

  // --- consuming ---------------------------------------------------------------------
  const closeWindow = (reason: RotationReason) => {
    if (window.events === 0) return;
    const w = window;
    window = new Window(windowOptions);
    const closedAt = new Date();
    const key = intentKey(closedAt, w.runs);
    const batches: ClosedBatch[] = [];
    for (const b of w.batches.values()) {
      b.spool.finish();
      const problem = b.check?.finish();
      const raw = problem !== undefined;
      if (raw) log.warn({ key: b.key, problem }, "batch is not well-formed: publishing its raw bytes");
      batches.push({
        key: b.key,
        id: batchId(config.EVENTS_STREAM, config.BATCH_GROUP, w.runs, b.key),
        name: batchFileName({
          closedAt,
          key: b.key,
          raw,
          ext: batchExtension(config.BATCH_FORMAT, config.BATCH_CONVERT, raw),
          ordinal: ordinals.next(closedAt, `${b.key ?? ""}${raw ? "/raw" : ""}`),
        }),
        raw,
        events: b.spool.events,
        bytes: b.spool.bytes,
        spoolPath: b.spool.path,
      });
    }
    queue.push({ key, closedAt, reason, runs: w.runs, batches, replies: w.replies, touchedAt: w.touchedAt });
    metrics.windowEvents.set(0);
    metrics.windowBytes.set(0);
    kick();
  };

  let working: Promise<void> | undefined;
  const kick = () => {
    let failed = false;
    working ??= (async () => {
      while (queue.length > 0) {
        await publishWindow(queue[0]!, false);
        queue.shift();
      }
    })()
      .catch((err: unknown) => {
        failed = true;
        if (!stopController.signal.aborted) log.error({ err: describeError(err) }, "publishing stopped");
      })
      .finally(() => {
        working = undefined;
        if (queue.length === 0 || stopController.signal.aborted) return;
        // After a failure (the guard), not at once: that would spin without yielding to timers.
        if (failed) setTimeout(kick, 1000).unref();
        else kick();
      });
  };

  const consumer = await js.consumers.get(config.EVENTS_STREAM, config.BATCH_GROUP);
  const messages: ConsumerMessages = await consumer.consume({ max_messages: 1000 });
  const consuming = (async () => {
    for await (const m of messages) {
      if (stopping) break;
      const seq = m.seq;
      const reply = (m as unknown as { reply: string }).reply;
      if (owned.has(seq)) {
        m.ack();
        continue;
      }
      if (window.has(seq)) {
        window.addReply(reply);
        continue;
      }
      const held = queue.find((w) => w.runs.some(([a, b]) => seq >= a && seq <= b));
      if (held) {
        held.replies.push(reply);
        continue;
      }
      const key = subjectKey(m.subject, config.BATCH_KEY);
      const batch = window.batch(key);
      const data = Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength);
      if (
        closeBeforeAdding(
          batch && { bytes: batch.spool.bytes, events: batch.spool.events },
          data.length,
          config.MAX_BATCH_BYTES,
          {
            runs: window.runs.length,
            keys: window.batches.size,
            newKey: batch === undefined,
            extendsRun: window.extendsRun(seq),
          },
        )
      ) {
        closeWindow("size");
      }
      window.add(seq, key, data, reply, Date.now());
      metrics.eventsIn.inc({
        input: config.TCP_PORT !== undefined && m.subject === config.TCP_SUBJECT ? "tcp" : "nats",
      });
      metrics.windowEvents.set(window.events);
      metrics.windowBytes.set(window.bytes);
    }
  })().catch((err: unknown) => {
    if (!stopping) log.error({ err: describeError(err) }, "consuming events stopped");
  });

  // --- the periodic check: rotation by time, keep-alive, expiry of records -----------
  const keepAliveAfter = Math.floor(config.EVENTS_ACK_WAIT_MS * 0.6);
  const tick = () => {
    const now = Date.now();
    if (rotationDue(window, now, config.ROTATION_INTERVAL_MS)) closeWindow("time");
    for (const held of [window, ...queue]) {
      if (held.replies.length === 0 || now - held.touchedAt < keepAliveAfter) continue;
      for (const reply of held.replies) nc.publish(reply, WPI);
      held.touchedAt = now;
      log.debug({ events: held.replies.length }, "kept a held window's events alive");
    }
    for (const key of owned.expire(now)) {
      intents
        .delete(key)
        .catch((err: unknown) =>
          log.warn({ err: describeError(err), window: key }, "could not delete a window record"),
        );
    }
  };
  const timer = setInterval(tick, config.ROTATION_CHECK_MS);

  log.info(
    {
      stream: config.EVENTS_STREAM,
      subjects: config.EVENT_SUBJECTS,
      group: config.BATCH_GROUP,
      format: config.BATCH_FORMAT,
      ackWaitMs: config.EVENTS_ACK_WAIT_MS,
    },
    "consuming events",
  );

  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      stopping = true;
      clearInterval(timer);
      await messages.close().catch(() => undefined);
      await consuming;
      closeWindow("shutdown");
      const drained = (async () => {
        while (working || queue.length > 0) await (working ?? sleep(10));
      })();
      const deadline = sleep(config.SHUTDOWN_TIMEOUT_MS).then(() => "timeout" as const);
      if ((await Promise.race([drained.then(() => "done" as const), deadline])) === "timeout") {
        log.warn({ windows: queue.length }, "shutdown deadline: windows left unpublished come back after a restart");
      }
      stopController.abort();
      await rm(spoolDir, { recursive: true, force: true }).catch(() => undefined);
    })();
    return closing;
  };
  const abandon = () => {
    closing ??= (async () => {
      stopping = true;
      clearInterval(timer);
      stopController.abort();
      queue.length = 0;
      await messages.close().catch(() => undefined);
      await consuming;
      // An in-flight publish may still finish and acknowledge its events; not waited for long.
      if (working) await Promise.race([working, sleep(5000)]);
    })();
    return closing;
  };
  return { close, abandon, [Symbol.asyncDispose]: close };
}

/**
 * A recorded window rebuilt from the stream: exactly its sequences (still
 * there: none was acknowledged), grouped by key as before, spooled again.
 */
async function rebuildWindow(
  js: JetStreamClient,
  config: BatcherConfig,
  key: string,
  intent: WindowIntent,
  spoolDir: string,
): Promise<ClosedWindow> {
  const spools = new Map<string, SpoolWriter>();
  let n = 0;
  for (const [from, to] of intent.runs) {
    const oc = await js.consumers.get(config.EVENTS_STREAM, {
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: from,
    });
    // Fetches end after `expires` with what there is, so a sequence gone from the stream cannot stall this.
    let done = false;
    while (!done) {
      const batch = await oc.fetch({ max_messages: Math.min(1000, to - from + 1), expires: 3000 });
      let got = 0;
      for await (const m of batch) {
        got++;
        if (m.seq > to) {
          done = true;
          break;
        }
        const k = subjectKey(m.subject, config.BATCH_KEY) ?? "";
        let spool = spools.get(k);
        if (!spool) {
          spool = new SpoolWriter(join(spoolDir, `recovered-${key}-${n++}.spool`));
          spools.set(k, spool);
        }
        spool.append(m.data);
        if (m.seq >= to || m.info.pending === 0) done = true;
      }
      if (got === 0) done = true;
    }
  }
  const batches: ClosedBatch[] = [];
  for (const b of intent.batches) {
    const spool = spools.get(b.key ?? "") ?? new SpoolWriter(join(spoolDir, `recovered-${key}-${n++}.spool`));
    spool.finish();
    batches.push({ ...b, spoolPath: spool.path });
  }
  return {
    key,
    closedAt: new Date(intent.closedAt),
    reason: intent.reason,
    runs: intent.runs,
    batches,
    replies: [],
    touchedAt: Date.now(),
  };
}

/** Removes the spool directory's files (used by tests and at start). */
export async function clearSpool(dir: string): Promise<void> {
  for (const name of await readdir(dir).catch(() => [])) await rm(join(dir, name), { force: true });
}

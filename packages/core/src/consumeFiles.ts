import type { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import {
  jetstream,
  jetstreamManager,
  JetStreamApiCodes,
  JetStreamApiError,
  type Consumer,
  type JetStreamManager,
  type JsMsg,
} from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { deadLetter } from "./deadLetter.js";
import { headersToRecord, parseEnvelope, type Envelope } from "./envelope.js";
import { describeError, EnvelopeError, errorCode, isEnvironmental, isPermanent, type ErrorCode } from "./errors.js";
import { silentLogger, type Logger } from "./logger.js";
import { jetstreamNames } from "./names.js";
import { connectNats } from "./nats.js";
import { checkObjectPayload, openPayload } from "./payload.js";
import { createPayloadReleaser, objectNameIn } from "./payloadRelease.js";
import { DEFAULT_ACK_WAIT_MS, provision, type DlqLimits } from "./provision.js";
import { createSemaphore } from "./semaphore.js";

export interface FileContext {
  envelope: Envelope;
  /** The payload (inline or object) as a verifying Readable; call once per attempt. */
  open(): Readable;
  /** 1 on the first delivery. */
  deliveryCount: number;
  /** Child logger bound to this file (fileId, path). */
  log: Logger;
  /** Tells the broker we are still working (throttled); the SDK also does this on a timer. */
  working(): void;
  /** Aborted when a shutdown's drain deadline passes: stop and throw. */
  signal: AbortSignal;
  headers: Readonly<Record<string, string>>;
}

export interface FileOutcome {
  envelope?: Envelope;
  outcome: "acked" | "retry" | "dead-lettered";
  code?: ErrorCode;
  error?: string;
  deliveryCount: number;
  durationMs: number;
  bytes?: number;
  /** Redelivery delay when outcome is "retry". */
  delayMs?: number;
}

export interface ConsumeFilesOptions {
  /** A connection to use (left open); or `url` to let the SDK connect (and close). */
  nats?: NatsConnection;
  url?: string | readonly string[];
  /** Durable consumer name shared by every member of the sink group. */
  group: string;
  /** Default files.input. */
  subject?: string;
  /** Default FILES. */
  stream?: string;
  /** Handlers run at once (default 4); never more messages are pulled than can run. */
  concurrency?: number;
  /**
   * Of those, handlers of Object Store payloads (large files) at once (default:
   * `concurrency`): bounds the memory of payload streams while small inline
   * files keep every slot busy. The others wait, kept alive, for a turn.
   */
  objectConcurrency?: number;
  signal?: AbortSignal;
  /** Attempts before a transient failure is dead-lettered (default 5). */
  maxDeliver?: number;
  /** First retry delay (default 1000): nak delay = backoffMs * 2^(deliveryCount-1). */
  backoffMs?: number;
  /** Cap for a single retry delay (default 15 min). */
  maxBackoffMs?: number;
  /**
   * Wanted ack_wait of the group's durable: a new durable gets it, an existing
   * one is raised to it, or lowered only while no member is active; unset
   * keeps what the durable has (or 30 s for a new one). Every member paces its
   * keep-alive from the durable's current value, re-read every few seconds,
   * and warns when that differs from this one.
   */
  ackWaitMs?: number;
  errorDir?: string;
  log?: Logger;
  /** After `signal` aborts, how long in-flight handlers may finish (default 30 s). */
  drainTimeoutMs?: number;
  onOutcome?: (o: FileOutcome) => void;
  /** Buckets whose objects may be read (default: this deployment's payload bucket). */
  allowedBuckets?: readonly string[];
  /** Stream replicas when the SDK has to create the stream (default 1; an existing stream is left as is). */
  replicas?: number;
  /** DLQ stream limits to apply (see ProvisionOptions.dlqLimits; unset leaves an existing DLQ stream as is). */
  dlqLimits?: DlqLimits;
  /** Pull request lifetime (default 5 s): bounds how long a shutdown waits for a pull to end. */
  fetchExpiresMs?: number;
  /**
   * Level of the "file handled" line after an ack (default info). A handler
   * that logs its own outcome line per file (the producer) sets debug, so a
   * file costs one info line, not two.
   */
  ackedLogLevel?: "info" | "debug";
  /**
   * Remove an envelope's payload object once this group's ack leaves no
   * group that still needs it (default true). Objects are otherwise left to
   * the periodic sweep's grace period.
   */
  releasePayloads?: boolean;
}

const NS_PER_MS = 1_000_000;
const WORKING_THROTTLE_MS = 1_000;
/** How often a member re-reads its durable's ack_wait (another member or an operator may change it). */
const ACK_WAIT_REFRESH_MS = 5_000;
/** Longest a free slot waits for others to free up so that they are filled by one pull. */
const PULL_GATHER_MS = 5;
/** Longest wait between retries during a broker/sink outage (see ENVIRONMENTAL_CODES). */
export const ENVIRONMENT_MAX_BACKOFF_MS = 30_000;

interface InFlight {
  msg: JsMsg;
  settled: boolean;
  /** When the broker last heard from us about this message (delivery or +WPI). */
  lastWorking: number;
  abort: AbortController;
  done: Promise<void>;
  /** Frees the message's slot (idempotent): once it is acked, the slot serves the next message. */
  release: () => void;
}

/**
 * Runs a sink: pulls envelopes from the group's durable consumer and calls
 * `handler` for each, at most `concurrency` at once. Resolve → ack (confirmed);
 * throw a permanent FilerelayError (e.g. PermanentError) → dead letter + term;
 * throw anything else → nak with exponential delay, and after `maxDeliver`
 * attempts dead letter with MAX_DELIVER_EXCEEDED — except for outages of the
 * broker or sink (ENVIRONMENTAL_CODES, e.g. DISK_SPACE_LOW, SINK_UNAVAILABLE),
 * which are retried until they end. Invalid envelopes are
 * dead-lettered at once. Runs until `signal` aborts, then stops pulling, lets
 * in-flight handlers finish within drainTimeoutMs, naks what is left, and
 * resolves.
 */
export async function consumeFiles(
  options: ConsumeFilesOptions,
  handler: (ctx: FileContext) => Promise<void>,
): Promise<void> {
  const log = (options.log ?? silentLogger()).child({ group: options.group });
  const signal = options.signal ?? new AbortController().signal;
  const streamName = options.stream ?? "FILES";
  const subject = options.subject ?? "files.input";
  const concurrency = Math.max(1, options.concurrency ?? 4);
  const objectSlots = createSemaphore(Math.min(concurrency, Math.max(1, options.objectConcurrency ?? concurrency)));
  const maxDeliver = Math.max(1, options.maxDeliver ?? 5);
  const backoffMs = options.backoffMs ?? 1000;
  const maxBackoffMs = options.maxBackoffMs ?? 15 * 60_000;
  const drainTimeoutMs = options.drainTimeoutMs ?? 30_000;
  const fetchExpiresMs = Math.max(1000, options.fetchExpiresMs ?? 5000);
  const ackedLevel = options.ackedLogLevel ?? "info";
  const names = jetstreamNames({ STREAM: streamName, SUBJECT: subject });
  const allowedBuckets = options.allowedBuckets ?? [names.payloadBucket];

  const ownsConnection = !options.nats;
  const nc =
    options.nats ??
    (await connectNats(
      {
        NATS_URL:
          typeof options.url === "string"
            ? options.url.split(",").map((s) => s.trim())
            : [...(options.url ?? ["nats://127.0.0.1:4222"])],
      },
      { name: `filerelay-sdk-${options.group}`, log, signal },
    ));

  try {
    const jsm = await jetstreamManager(nc);
    const ensureConsumer = async (): Promise<{ consumer: Consumer; ackWaitMs: number }> => {
      const replicas = await streamReplicas(jsm, streamName, options.replicas ?? 1);
      await provision(
        nc,
        { STREAM: streamName, SUBJECT: subject, STREAM_REPLICAS: replicas },
        {
          log,
          groups: [options.group],
          ...(options.dlqLimits ? { dlqLimits: options.dlqLimits } : {}),
          ...(options.ackWaitMs !== undefined ? { ackWaitMs: options.ackWaitMs } : {}),
        },
      );
      const consumer = await jetstream(nc).consumers.get(streamName, options.group);
      const info = await consumer.info(true);
      return { consumer, ackWaitMs: durableAckWaitMs(info.config.ack_wait) };
    };
    let { consumer, ackWaitMs } = await ensureConsumer();
    const releaser = createPayloadReleaser(nc, { stream: streamName, bucket: names.payloadBucket, log });
    let warnedAckWaitMs: number | undefined;
    /** The durable's ack_wait is the group's: a member configured otherwise says so, once per value. */
    const checkAckWait = () => {
      if (options.ackWaitMs === undefined || options.ackWaitMs === ackWaitMs || warnedAckWaitMs === ackWaitMs) return;
      warnedAckWaitMs = ackWaitMs;
      log.warn(
        { configuredAckWaitMs: options.ackWaitMs, groupAckWaitMs: ackWaitMs },
        `ACK_WAIT_MS is ${options.ackWaitMs} but group ${options.group}'s durable has ack_wait ${ackWaitMs}; ` +
          "following the durable's value (a larger one is never lowered while a member is active): " +
          "give every member of a group the same ACK_WAIT_MS",
      );
    };
    checkAckWait();
    log.info({ stream: streamName, subject, concurrency, maxDeliver, ackWaitMs }, "consuming files");

    const inflight = new Set<InFlight>();
    // One keep-alive timer for every in-flight message (not one per message):
    // each tick sends +WPI for the messages not heard of for a third of ack_wait.
    let keepAliveTimer: NodeJS.Timeout | undefined;
    const startKeepAlive = () => {
      clearInterval(keepAliveTimer);
      const periodMs = Math.max(500, Math.floor(ackWaitMs / 3));
      const tick = () => {
        const now = Date.now();
        for (const entry of inflight) {
          if (entry.settled || now - entry.lastWorking < periodMs / 2) continue;
          entry.lastWorking = now;
          entry.msg.working();
        }
      };
      keepAliveTimer = setInterval(tick, Math.max(250, Math.floor(periodMs / 2)));
      // A shorter ack_wait applies to messages already held: catch up at once.
      tick();
    };
    startKeepAlive();
    /** Paces from the durable's ack_wait as it is now (another member or an operator may have changed it). */
    const followAckWait = (ms: number) => {
      if (ms === ackWaitMs) return;
      log.info({ previousAckWaitMs: ackWaitMs, ackWaitMs }, "group's ack_wait changed; keep-alive follows it");
      ackWaitMs = ms;
      startKeepAlive();
      checkAckWait();
    };
    let refreshing = false;
    const ackWaitRefresh = setInterval(() => {
      if (refreshing) return;
      refreshing = true;
      consumer
        .info(false)
        .then((info) => followAckWait(durableAckWaitMs(info.config.ack_wait)))
        // The pull loop notices (and handles) a broker or durable that is gone.
        .catch((err: unknown) => log.debug({ err: describeError(err) }, "cannot re-read the group's ack_wait"))
        .finally(() => {
          refreshing = false;
        });
    }, ACK_WAIT_REFRESH_MS);
    const confirmAck = ackConfirmer(nc);
    let slotFreed: (() => void) | undefined;
    const notifySlot = () => {
      const f = slotFreed;
      slotFreed = undefined;
      f?.();
    };
    signal.addEventListener("abort", notifySlot, { once: true });

    // Acked messages whose ack is still being confirmed: they hold no slot,
    // but a shutdown waits for them.
    const confirming = new Set<Promise<void>>();
    const runOne = (msg: JsMsg) => {
      let released = false;
      const entry: InFlight = {
        msg,
        settled: false,
        lastWorking: Date.now(),
        abort: new AbortController(),
        done: Promise.resolve(),
        release: () => {
          if (released) return;
          released = true;
          inflight.delete(entry);
          notifySlot();
        },
      };
      inflight.add(entry);
      entry.done = handleMessage(entry)
        .catch((err: unknown) => log.error({ err: describeError(err) }, "unexpected failure handling a message"))
        .finally(() => {
          entry.release();
          confirming.delete(entry.done);
        });
    };

    const finish = (entry: InFlight, outcome: FileOutcome, flog: Logger) => {
      const level = outcome.outcome === "acked" ? ackedLevel : outcome.outcome === "retry" ? "warn" : "error";
      const env = outcome.envelope;
      flog[level](
        {
          fileId: env?.id,
          path: env?.subject,
          size: env?.size,
          sha256: env?.sha256,
          outcome: outcome.outcome,
          attempts: outcome.deliveryCount,
          durationMs: outcome.durationMs,
          ...(outcome.code ? { code: outcome.code } : {}),
          ...(outcome.error ? { err: outcome.error } : {}),
          ...(outcome.delayMs !== undefined ? { retryInMs: outcome.delayMs } : {}),
        },
        outcome.outcome === "acked"
          ? "file handled"
          : outcome.outcome === "retry"
            ? "file failed, will be retried"
            : "file dead-lettered",
      );
      options.onOutcome?.(outcome);
    };

    const handleMessage = async (entry: InFlight): Promise<void> => {
      const { msg } = entry;
      const started = Date.now();
      const deliveryCount = msg.info.deliveryCount;
      // nats.js refuses to decode header values holding a bare CR or LF; such a
      // message could never be handled, so it is dead-lettered, not redelivered forever.
      let decodeError: unknown;
      let headers: Record<string, string> = {};
      try {
        headers = headersToRecord(msg.headers);
      } catch (err) {
        decodeError = err;
        headers = lenientHeaders(msg);
      }
      let flog = log.child({ fileId: headers["ce-id"], seq: msg.seq });
      const base = () => ({ deliveryCount, durationMs: Date.now() - started });

      const nakFor = (attempt: number) => Math.min(backoffMs * 2 ** (attempt - 1), maxBackoffMs);

      const toDeadLetter = async (envelope: Envelope | undefined, code: ErrorCode, error: string) => {
        try {
          // The pin comes first: once the term lands, another group's ack may be the
          // last, and its fast release must find the object pinned for a replay.
          const pinned = objectNameIn(headers, names.payloadBucket);
          if (pinned !== undefined) await releaser.pin(pinned, options.group);
          await deadLetter(nc, {
            group: options.group,
            headers,
            body: msg.data,
            code,
            error,
            deliveries: deliveryCount,
            msgId: `${options.group}:${msg.seq}`,
            streamSeq: msg.seq,
            ...(envelope ? { envelope } : {}),
            ...(options.errorDir ? { errorDir: options.errorDir } : {}),
            ...(envelope
              ? {
                  openPayload: () =>
                    openPayload(nc, envelope, msg.data, { allowedBuckets, signal: entry.abort.signal }),
                }
              : {}),
            log: flog,
          });
        } catch (err) {
          // Never lost: without a stored dead letter the message stays in the stream.
          if (entry.settled) return;
          entry.settled = true;
          const delayMs = nakFor(deliveryCount);
          msg.nak(delayMs);
          finish(
            entry,
            {
              ...(envelope ? { envelope } : {}),
              outcome: "retry",
              code: "DLQ_PUBLISH_FAILED",
              error: `${describeError(err)} (while dead-lettering: [${code}] ${error})`,
              delayMs,
              ...base(),
            },
            flog,
          );
          return;
        }
        if (entry.settled) return;
        entry.settled = true;
        // No reason argument: servers before 2.11 ignore a "+TERM <reason>" ack entirely.
        msg.term();
        finish(entry, { ...(envelope ? { envelope } : {}), outcome: "dead-lettered", code, error, ...base() }, flog);
      };

      {
        let envelope: Envelope;
        try {
          if (decodeError !== undefined) {
            throw new EnvelopeError("ENVELOPE_INVALID", `headers cannot be decoded: ${describeError(decodeError)}`);
          }
          // The MsgHdrs, not the record: repeated envelope headers must be seen to be refused.
          envelope = parseEnvelope(msg.headers ?? headers);
          if (envelope.payload.kind === "inline" && msg.data.length !== envelope.size) {
            throw new EnvelopeError(
              "ENVELOPE_SIZE_MISMATCH",
              `inline body is ${msg.data.length} bytes, ce-filesize says ${envelope.size}`,
            );
          }
          if (envelope.payload.kind === "object" && msg.data.length !== 0) {
            throw new EnvelopeError(
              "ENVELOPE_INVALID",
              `an object payload envelope must have an empty body, got ${msg.data.length} bytes`,
            );
          }
        } catch (err) {
          await toDeadLetter(undefined, errorCode(err, "ENVELOPE_INVALID"), describeError(err));
          return;
        }
        flog = log.child({ fileId: envelope.id, path: envelope.subject, seq: msg.seq });
        const ctx: FileContext = {
          envelope,
          open: () => openPayload(nc, envelope, msg.data, { allowedBuckets, signal: entry.abort.signal }),
          deliveryCount,
          log: flog,
          working: () => {
            if (entry.settled || Date.now() - entry.lastWorking < WORKING_THROTTLE_MS) return;
            entry.lastWorking = Date.now();
            msg.working();
          },
          signal: entry.abort.signal,
          headers,
        };
        let releaseObjectSlot: (() => void) | undefined;
        try {
          // An envelope lying about its object (size, digest, bucket) is refused before
          // the sink reserves disk space for it or starts writing.
          if (envelope.payload.kind === "object") {
            releaseObjectSlot = await objectSlots.acquire();
            // Handed back (drain deadline) while waiting for a turn.
            if (entry.settled) return;
            await checkObjectPayload(nc, envelope, envelope.payload, { allowedBuckets });
          }
          await handler(ctx);
        } catch (err) {
          if (entry.settled) return;
          const code = errorCode(err);
          const text = describeError(err);
          // Redelivered to us while another member of the group still handled it: that
          // member's ack was the last and released the object. A message the stream no
          // longer holds has been settled by every group, this one included.
          if (code === "PAYLOAD_MISSING" && (await releaser.isStored(msg.seq)) === false) {
            if (entry.settled) return;
            entry.settled = true;
            msg.ack();
            flog.warn({ fileId: envelope.id }, "payload already released: the group had handled this envelope");
            finish(entry, { envelope, outcome: "acked", bytes: envelope.size, ...base() }, flog);
            return;
          }
          if (isPermanent(err)) {
            await toDeadLetter(envelope, code, text);
          } else if (deliveryCount >= maxDeliver && !isEnvironmental(err)) {
            await toDeadLetter(
              envelope,
              "MAX_DELIVER_EXCEEDED",
              `failed ${deliveryCount} times; last error [${code}]: ${text}`,
            );
          } else {
            entry.settled = true;
            // An outage is retried for as long as it lasts, so its delay is capped lower.
            const delayMs = isEnvironmental(err)
              ? Math.min(nakFor(deliveryCount), ENVIRONMENT_MAX_BACKOFF_MS, maxBackoffMs)
              : nakFor(deliveryCount);
            msg.nak(delayMs);
            finish(entry, { envelope, outcome: "retry", code, error: text, delayMs, ...base() }, flog);
          }
          return;
        } finally {
          releaseObjectSlot?.();
        }
        if (entry.settled) return;
        entry.settled = true;
        const confirmation = confirmAck(msg);
        // The ack is sent: the next message need not wait for its confirmation
        // (one PING/PONG shared by several acks).
        confirming.add(entry.done);
        entry.release();
        const confirmed = await confirmation;
        if (!confirmed) {
          flog.warn({ fileId: envelope.id }, "ack not confirmed by the broker; the file may be delivered again");
        } else if (options.releasePayloads !== false && envelope.payload.kind === "object") {
          releaser.afterAck({ seq: msg.seq, time: msg.info.timestampNanos / NS_PER_MS }, envelope, flog);
        }
        finish(entry, { envelope, outcome: "acked", bytes: envelope.size, ...base() }, flog);
      }
    };

    // Resolves when a slot frees (or the signal aborts), or after `ms` when given.
    const slotOrTimeout = (ms?: number) =>
      new Promise<void>((resolve) => {
        let timer: NodeJS.Timeout | undefined;
        slotFreed = () => {
          clearTimeout(timer);
          resolve();
        };
        if (ms !== undefined) timer = setTimeout(resolve, ms);
      });
    // Pull batching: while handlers run, a pull waits up to PULL_GATHER_MS for
    // half the slots to be free, so that a busy sink sends one pull (a
    // subscription, a request, an unsubscribe) per few messages, not per message.
    const minBatch = Math.max(1, Math.ceil(concurrency / 2));

    // Pull loop: a pull asks for exactly the free slots, so nothing waits in a
    // client-side buffer while its ack_wait runs out.
    let failures = 0;
    while (!signal.aborted) {
      if (inflight.size >= concurrency) {
        await slotOrTimeout();
        continue;
      }
      if (inflight.size > 0 && concurrency - inflight.size < minBatch) {
        const deadline = Date.now() + PULL_GATHER_MS;
        while (!signal.aborted && concurrency - inflight.size < minBatch && Date.now() < deadline) {
          await slotOrTimeout(deadline - Date.now());
        }
        if (signal.aborted) break;
      }
      try {
        const iter = await consumer.fetch({ max_messages: concurrency - inflight.size, expires: fetchExpiresMs });
        const stop = () => iter.stop();
        signal.addEventListener("abort", stop, { once: true });
        // Safety net: a pull must end by itself shortly after it expires.
        const watchdog = setTimeout(stop, fetchExpiresMs + 10_000);
        try {
          for await (const m of iter) {
            if (signal.aborted) {
              m.nak();
              continue;
            }
            runOne(m);
          }
        } finally {
          clearTimeout(watchdog);
          signal.removeEventListener("abort", stop);
        }
        failures = 0;
      } catch (err) {
        if (signal.aborted) break;
        failures++;
        const delay = Math.min(250 * 2 ** Math.min(failures - 1, 5), 8000);
        log.warn({ err: describeError(err), retryInMs: delay }, "pulling messages failed; retrying");
        await sleep(delay, undefined, { signal }).catch(() => undefined);
        if (isConsumerGone(err) && !signal.aborted) {
          const ensured = await ensureConsumer().catch((e: unknown) => {
            log.warn({ err: describeError(e) }, "re-provisioning the group failed");
            return undefined;
          });
          if (ensured) {
            consumer = ensured.consumer;
            followAckWait(ensured.ackWaitMs);
          }
        }
      }
    }

    // Drain: let in-flight handlers finish, then hand back what is left.
    if (inflight.size > 0) {
      log.info({ inFlight: inflight.size, drainTimeoutMs }, "stopping: waiting for in-flight files");
      const all = Promise.all([...inflight].map((e) => e.done));
      const timer = sleep(drainTimeoutMs, "timeout" as const, { ref: false });
      if ((await Promise.race([all.then(() => "done" as const), timer])) === "timeout") {
        for (const entry of inflight) {
          if (entry.settled) continue;
          entry.settled = true;
          entry.msg.nak();
          entry.abort.abort(new Error("drain deadline passed"));
          let headers: Record<string, string> = {};
          try {
            headers = headersToRecord(entry.msg.headers);
          } catch {
            // undecodable headers: logged without a fileId
          }
          log.warn(
            { fileId: headers["ce-id"], seq: entry.msg.seq, outcome: "retry", code: "SHUTDOWN" },
            "drain deadline passed; file handed back for redelivery",
          );
          options.onOutcome?.({
            outcome: "retry",
            code: "SHUTDOWN",
            error: "drain deadline passed",
            deliveryCount: entry.msg.info.deliveryCount,
            durationMs: 0,
          });
        }
      }
    }
    clearInterval(keepAliveTimer);
    clearInterval(ackWaitRefresh);
    // Acks still being confirmed (bounded by their own timeout).
    await Promise.all([...confirming]);
    await releaser.close();
    await nc.flush().catch(() => undefined);
    log.info("stopped consuming files");
  } finally {
    if (ownsConnection) await nc.drain().catch(() => nc.close());
  }
}

function durableAckWaitMs(ackWaitNs: number | undefined): number {
  return (ackWaitNs ?? DEFAULT_ACK_WAIT_MS * NS_PER_MS) / NS_PER_MS;
}

async function streamReplicas(jsm: JetStreamManager, stream: string, fallback: number): Promise<number> {
  try {
    return (await jsm.streams.info(stream)).config.num_replicas;
  } catch {
    return fallback;
  }
}

function isConsumerGone(err: unknown): boolean {
  if (err instanceof JetStreamApiError) {
    return err.code === JetStreamApiCodes.ConsumerNotFound || err.code === JetStreamApiCodes.StreamNotFound;
  }
  return /consumer (not found|deleted)|stream not found/i.test(String((err as Error | undefined)?.message));
}

const ACK_CONFIRM_TIMEOUT_MS = 5000;

/**
 * Confirmed acks without a request per message: the ack is published, then
 * confirmed by a PING/PONG (`flush`) shared by every ack published before it
 * was sent (group commit: an ack joins the next flush that has not started).
 * The server handles a connection's messages in order, so the PONG means it
 * has the acks. When the flush fails or times out (e.g. across a reconnect),
 * the ack is sent again as a request on the message's reply subject and the
 * broker's reply is awaited (twice at most). A lost ack only means a
 * redelivery, which the sinks recognise by SHA-256 (exactly-once effect).
 */
function ackConfirmer(nc: NatsConnection): (msg: JsMsg) => Promise<boolean> {
  let queued: Promise<boolean> | undefined;
  let last: Promise<unknown> = Promise.resolve();
  const flushOnce = async (): Promise<boolean> => {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        nc.flush().then(() => true),
        new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(false), ACK_CONFIRM_TIMEOUT_MS);
        }),
      ]);
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
    }
  };
  const nextFlush = (): Promise<boolean> => {
    if (queued) return queued;
    const p = last.then(() => {
      queued = undefined;
      return flushOnce();
    });
    queued = p;
    last = p;
    return p;
  };
  return async (msg) => {
    try {
      msg.ack();
    } catch {
      return ackRetried(nc, msg);
    }
    if (await nextFlush()) return true;
    return ackRetried(nc, msg);
  };
}

/** The ack again, as requests on the message's reply subject (the first ack may have been lost). */
async function ackRetried(nc: NatsConnection, msg: JsMsg): Promise<boolean> {
  const reply = "reply" in msg && typeof msg.reply === "string" ? msg.reply : undefined;
  if (!reply) return false;
  for (let attempt = 2; attempt <= 3; attempt++) {
    try {
      await nc.request(reply, "+ACK", { timeout: 5000 });
      return true;
    } catch {
      /* next attempt */
    }
  }
  return false;
}

/**
 * Best effort for a dead-letter record when nats.js cannot decode a message's
 * headers (a bare CR or LF inside a value): split the raw header block on any
 * line break so the DLQ entry still names the ce-id and file. Reads the
 * client's raw buffer, which is not public API, hence every guard.
 */
function lenientHeaders(msg: JsMsg): Record<string, string> {
  const raw = (msg as unknown as { msg?: { _rdata?: unknown; _msg?: { hdr?: unknown } } }).msg;
  const data = raw?._rdata;
  const hdr = raw?._msg?.hdr;
  if (!(data instanceof Uint8Array) || typeof hdr !== "number" || hdr <= 0) return {};
  const out: Record<string, string> = {};
  for (const line of Buffer.from(data.subarray(0, hdr))
    .toString("utf8")
    .split(/\r\n|\r|\n/)
    .slice(1)) {
    const i = line.indexOf(":");
    if (i > 0 && out[line.slice(0, i)] === undefined) out[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return out;
}

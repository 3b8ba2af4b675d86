import type { JsMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { deadLetter } from "../deadLetter.js";
import { parseEnvelope, type Envelope } from "../envelope.js";
import { describeError, EnvelopeError, errorCode, type ErrorCode } from "../errors.js";
import type { Logger } from "../logger.js";
import { checkObjectPayload, openPayload } from "../payload.js";
import { objectNameIn, type PayloadReleaser } from "../payloadRelease.js";
import type { Semaphore } from "../semaphore.js";
import type { StatusLedger } from "../status/ledger.js";
import { deadLetterFailedDecision, deliveryDecision, type DeliveryLimits } from "./deliveryPolicy.js";
import { messageHeaders } from "./headers.js";
import type { InFlight, InFlightSet } from "./inflight.js";
import type { ReportOutcome } from "./report.js";
import type { FileContext, FileHandler } from "./types.js";

const NS_PER_MS = 1_000_000;

/** What handling one message needs from the running consumeFiles(). */
export interface MessageDeps {
  nc: NatsConnection;
  group: string;
  handler: FileHandler;
  log: Logger;
  limits: DeliveryLimits;
  allowedBuckets: readonly string[];
  /** This deployment's payload bucket: objects in it are pinned while a dead letter references them. */
  payloadBucket: string;
  errorDir?: string;
  /** Turns for handlers of Object Store payloads. */
  objectSlots: Semaphore;
  releaser: PayloadReleaser;
  releasePayloads: boolean;
  confirmAck: (msg: JsMsg) => Promise<boolean>;
  inflight: InFlightSet;
  report: ReportOutcome;
  /** Where deliveries are recorded (DESIGN §8); undefined records nothing. */
  status: StatusLedger | undefined;
}

/**
 * One delivery, from envelope checks to a settled message: an invalid
 * envelope is dead-lettered at once; a valid one goes to the handler, and the
 * delivery policy turns its result into ack, nak (with delay) or dead letter.
 * An ack is confirmed, and then the payload object may be released.
 */
export async function handleMessage(entry: InFlight, deps: MessageDeps): Promise<void> {
  const { msg } = entry;
  const { nc, log, limits, allowedBuckets, report } = deps;
  const started = Date.now();
  const deliveryCount = msg.info.deliveryCount;
  const { headers, decodeError } = await messageHeaders(nc, msg);
  let flog = log.child({ fileId: headers["ce-id"], seq: msg.seq });
  const base = () => ({ deliveryCount, durationMs: Date.now() - started });
  const openFor = (envelope: Envelope, onProgress?: (bytes: number) => void) =>
    openPayload(nc, envelope, msg.data, {
      allowedBuckets,
      signal: entry.abort.signal,
      ...(onProgress ? { onProgress } : {}),
    });

  const toDeadLetter = async (envelope: Envelope | undefined, code: ErrorCode, error: string) => {
    try {
      // The pin comes first: once the term lands, another group's ack may be the
      // last, and its fast release must find the object pinned for a replay.
      const pinned = objectNameIn(headers, deps.payloadBucket);
      if (pinned !== undefined) await deps.releaser.pin(pinned, deps.group);
      await deadLetter(nc, {
        group: deps.group,
        headers,
        body: msg.data,
        code,
        error,
        deliveries: deliveryCount,
        msgId: `${deps.group}:${msg.seq}`,
        streamSeq: msg.seq,
        ...(envelope ? { envelope } : {}),
        ...(deps.errorDir ? { errorDir: deps.errorDir } : {}),
        ...(envelope ? { openPayload: () => openFor(envelope) } : {}),
        log: flog,
      });
    } catch (err) {
      // Never lost: without a stored dead letter the message stays in the stream.
      if (entry.settled) return;
      entry.settled = true;
      const nak = deadLetterFailedDecision(err, { code, reason: error }, deliveryCount, limits);
      msg.nak(nak.delayMs);
      report(
        {
          ...(envelope ? { envelope } : {}),
          outcome: "retry",
          code: nak.code,
          error: nak.reason,
          delayMs: nak.delayMs,
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
    if (envelope) {
      await deps.status?.noteDelivery(envelope, deps.group, "failed", {
        code,
        reason: error,
        attempts: deliveryCount,
        supersede: true,
      });
    }
    report({ ...(envelope ? { envelope } : {}), outcome: "dead-lettered", code, error, ...base() }, flog);
  };

  let envelope: Envelope;
  try {
    // Such a message could never be handled: dead-lettered, not redelivered forever.
    if (decodeError !== undefined) {
      throw new EnvelopeError("ENVELOPE_INVALID", `headers cannot be decoded: ${describeError(decodeError)}`);
    }
    envelope = checkedEnvelope(msg, headers);
  } catch (err) {
    await toDeadLetter(undefined, errorCode(err, "ENVELOPE_INVALID"), describeError(err));
    return;
  }
  flog = log.child({ fileId: envelope.id, path: envelope.subject, seq: msg.seq });
  const status = deps.status;
  // A large file's delivery is visible while it runs, with byte progress.
  const tracked = status !== undefined && envelope.payload.kind === "object";
  const ctx: FileContext = {
    envelope,
    open: tracked
      ? () => openFor(envelope, (bytes) => status.progress(envelope.id, bytes, envelope.size, deps.group))
      : () => openFor(envelope),
    deliveryCount,
    log: flog,
    working: () => deps.inflight.working(entry),
    signal: entry.abort.signal,
    headers,
  };
  let releaseObjectSlot: (() => void) | undefined;
  try {
    // An envelope lying about its object (size, digest, bucket) is refused before
    // the sink reserves disk space for it or starts writing.
    if (envelope.payload.kind === "object") {
      releaseObjectSlot = await deps.objectSlots.acquire();
      // Handed back (drain deadline) while waiting for a turn.
      if (entry.settled) return;
      await checkObjectPayload(nc, envelope, envelope.payload, { allowedBuckets });
    }
    const inProgress =
      tracked &&
      (await status.noteDelivery(envelope, deps.group, "in_progress", { attempts: deliveryCount, bytes: 0 }));
    const result = await deps.handler(ctx);
    // Recorded before the ack: a delivery whose record could not be stored is
    // retried (the sink rewrites the same output), never acked unrecorded.
    await status?.recordDelivery(envelope, deps.group, "delivered", {
      location: result?.location,
      attempts: deliveryCount,
      bytes: envelope.size,
      // Anything this group recorded before: in_progress, a failure before a replay, a redelivery.
      supersede: inProgress || deliveryCount > 1 || headers["Nats-Msg-Id"] !== envelope.id,
    });
  } catch (err) {
    if (entry.settled) return;
    // Redelivered to us while another member of the group still handled it: that
    // member's ack was the last and released the object. A message the stream no
    // longer holds has been settled by every group, this one included. So has one
    // whose object was released for it: a broker that lost acks in a crash
    // delivers such a message again after every group had acknowledged it.
    const missing = errorCode(err) === "PAYLOAD_MISSING";
    const messageGone =
      missing &&
      envelope.payload.kind === "object" &&
      ((await deps.releaser.isStored(msg.seq)) === false || (await deps.releaser.wasReleased(envelope.payload.name)));
    if (entry.settled) return;
    const decision = deliveryDecision(err, deliveryCount, limits, { messageGone });
    if (decision.action === "ack") {
      entry.settled = true;
      msg.ack();
      flog.warn({ fileId: envelope.id }, "payload already released: the group had handled this envelope");
      report({ envelope, outcome: "acked", bytes: envelope.size, ...base() }, flog);
    } else if (decision.action === "deadLetter") {
      await toDeadLetter(envelope, decision.code, decision.reason);
    } else {
      entry.settled = true;
      msg.nak(decision.delayMs);
      report(
        {
          envelope,
          outcome: "retry",
          code: decision.code,
          error: decision.reason,
          delayMs: decision.delayMs,
          ...base(),
        },
        flog,
      );
    }
    return;
  } finally {
    releaseObjectSlot?.();
  }
  if (entry.settled) return;
  entry.settled = true;
  const confirmation = deps.confirmAck(msg);
  // The ack is sent: the next message need not wait for its confirmation
  // (one PING/PONG shared by several acks).
  deps.inflight.confirming(entry);
  const confirmed = await confirmation;
  if (!confirmed) {
    flog.warn({ fileId: envelope.id }, "ack not confirmed by the broker; the file may be delivered again");
  } else if (deps.releasePayloads && envelope.payload.kind === "object") {
    deps.releaser.afterAck({ seq: msg.seq, time: msg.info.timestampNanos / NS_PER_MS }, envelope, flog);
  }
  report({ envelope, outcome: "acked", bytes: envelope.size, ...base() }, flog);
}

/** The envelope of a message whose headers decoded, checked against its body; throws an EnvelopeError. */
function checkedEnvelope(msg: JsMsg, headers: Record<string, string>): Envelope {
  // The MsgHdrs, not the record: repeated envelope headers must be seen to be refused.
  const envelope = parseEnvelope(msg.headers ?? headers);
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
  return envelope;
}

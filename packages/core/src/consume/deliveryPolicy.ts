import { backoffDelay } from "../backoff.js";
import { describeError, errorCode, isEnvironmental, isPermanent, type ErrorCode } from "../errors.js";

/** Longest wait between retries during a broker/sink outage (see ENVIRONMENTAL_CODES). */
export const ENVIRONMENT_MAX_BACKOFF_MS = 30_000;

export interface DeliveryLimits {
  /** Attempts before a transient failure is dead-lettered. */
  maxDeliver: number;
  /** First retry delay: the n-th delivery's nak delay is backoffMs * 2^(n-1). */
  backoffMs: number;
  /** Cap for a single retry delay. */
  maxBackoffMs: number;
}

export type DeliveryDecision =
  | { action: "ack" }
  | { action: "nak"; delayMs: number; code: ErrorCode; reason: string }
  | { action: "deadLetter"; code: ErrorCode; reason: string };

/** The nak delay after a message's n-th delivery failed (n ≥ 1). */
export function retryDelayMs(deliveryCount: number, limits: DeliveryLimits): number {
  return backoffDelay(deliveryCount - 1, { baseMs: limits.backoffMs, maxMs: limits.maxBackoffMs });
}

/** What is known about a failed delivery besides its error. */
export interface DeliveryFacts {
  /**
   * The stream no longer holds the message (looked up only for
   * PAYLOAD_MISSING): every group, this one included, has settled it.
   */
  messageGone?: boolean;
}

/**
 * What to do with a message whose handling threw `error`: a permanent error →
 * dead letter with its code; a transient one → nak with exponential delay,
 * until the `maxDeliver`-th delivery, which is dead-lettered as
 * MAX_DELIVER_EXCEEDED. An outage of the broker or sink (ENVIRONMENTAL_CODES)
 * is never dead-lettered: it is retried for as long as it lasts, so its delay
 * is capped lower. A payload missing because another member of the group
 * handled the message (its ack was the last and released the object) → ack.
 */
export function deliveryDecision(
  error: unknown,
  deliveryCount: number,
  limits: DeliveryLimits,
  facts: DeliveryFacts = {},
): DeliveryDecision {
  const code = errorCode(error);
  if (code === "PAYLOAD_MISSING" && facts.messageGone === true) return { action: "ack" };
  const reason = describeError(error);
  if (isPermanent(error)) return { action: "deadLetter", code, reason };
  if (isEnvironmental(error)) {
    const delayMs = Math.min(retryDelayMs(deliveryCount, limits), ENVIRONMENT_MAX_BACKOFF_MS);
    return { action: "nak", delayMs, code, reason };
  }
  if (deliveryCount >= limits.maxDeliver) {
    return {
      action: "deadLetter",
      code: "MAX_DELIVER_EXCEEDED",
      reason: `failed ${deliveryCount} times; last error [${code}]: ${reason}`,
    };
  }
  return { action: "nak", delayMs: retryDelayMs(deliveryCount, limits), code, reason };
}

/**
 * A dead letter that could not be stored: the message stays in the stream and
 * comes back after the usual delay (never lost, never acked without a record).
 */
export function deadLetterFailedDecision(
  error: unknown,
  deadLetter: { code: ErrorCode; reason: string },
  deliveryCount: number,
  limits: DeliveryLimits,
): Extract<DeliveryDecision, { action: "nak" }> {
  return {
    action: "nak",
    delayMs: retryDelayMs(deliveryCount, limits),
    code: "DLQ_PUBLISH_FAILED",
    reason: `${describeError(error)} (while dead-lettering: [${deadLetter.code}] ${deadLetter.reason})`,
  };
}

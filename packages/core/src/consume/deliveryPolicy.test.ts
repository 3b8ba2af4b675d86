import { describe, expect, it } from "vitest";
import { EnvelopeError, FilerelayError, PermanentError, SinkError } from "../errors.js";
import {
  deadLetterFailedDecision,
  deliveryDecision,
  ENVIRONMENT_MAX_BACKOFF_MS,
  type DeliveryDecision,
  type DeliveryFacts,
  type DeliveryLimits,
} from "./deliveryPolicy.js";

const limits: DeliveryLimits = { maxDeliver: 5, backoffMs: 1000, maxBackoffMs: 15 * 60_000 };
const transient = new Error("boom");
const diskLow = new SinkError("DISK_SPACE_LOW", "disk full");
const s3Down = new SinkError("SINK_UNAVAILABLE", "503");
const missing = new FilerelayError("PAYLOAD_MISSING", "no object");
const gone: DeliveryFacts = { messageGone: true };

type Row = [
  name: string,
  error: unknown,
  deliveryCount: number,
  limits: DeliveryLimits,
  facts: DeliveryFacts,
  want: DeliveryDecision,
];

// prettier-ignore
const table: Row[] = [
  // permanent codes: dead letter at once, with their own code
  ["a permanent error is dead-lettered with its code", new EnvelopeError("ENVELOPE_INVALID", "bad ce-id"), 1, limits, {},
    { action: "deadLetter", code: "ENVELOPE_INVALID", reason: "bad ce-id" }],
  ["PermanentError from a handler", new PermanentError("no such bucket"), 2, limits, {},
    { action: "deadLetter", code: "HANDLER_PERMANENT", reason: "no such bucket" }],
  ["an instance marked permanent beats its code's table entry", new SinkError("SINK_UNAVAILABLE", "gone", { permanent: true }), 1, limits, {},
    { action: "deadLetter", code: "SINK_UNAVAILABLE", reason: "gone" }],
  ["a missing payload while the message is still stored", missing, 1, limits, {},
    { action: "deadLetter", code: "PAYLOAD_MISSING", reason: "no object" }],
  ["a missing payload while the stream could not say", missing, 1, limits, { messageGone: false },
    { action: "deadLetter", code: "PAYLOAD_MISSING", reason: "no object" }],
  // the group handled it already
  ["a missing payload of a message the stream no longer holds is acked", missing, 2, limits, gone, { action: "ack" }],
  ["messageGone means nothing for other errors", transient, 1, limits, gone,
    { action: "nak", delayMs: 1000, code: "HANDLER_FAILED", reason: "boom" }],
  // transient: exponential nak delay, then MAX_DELIVER_EXCEEDED
  ["first transient failure: nak after backoffMs", transient, 1, limits, {},
    { action: "nak", delayMs: 1000, code: "HANDLER_FAILED", reason: "boom" }],
  ["the delay doubles per delivery", transient, 3, limits, {},
    { action: "nak", delayMs: 4000, code: "HANDLER_FAILED", reason: "boom" }],
  ["the delay is capped at maxBackoffMs", transient, 4, { maxDeliver: 10, backoffMs: 1000, maxBackoffMs: 5000 }, {},
    { action: "nak", delayMs: 5000, code: "HANDLER_FAILED", reason: "boom" }],
  ["a thrown non-Error is a transient failure", undefined, 1, limits, {},
    { action: "nak", delayMs: 1000, code: "HANDLER_FAILED", reason: "" }],
  ["the maxDeliver-th failure is dead-lettered", new FilerelayError("HANDLER_FAILED", "write failed"), 5, limits, {},
    { action: "deadLetter", code: "MAX_DELIVER_EXCEEDED", reason: "failed 5 times; last error [HANDLER_FAILED]: write failed" }],
  ["maxDeliver 1 dead-letters the first transient failure", transient, 1, { ...limits, maxDeliver: 1 }, {},
    { action: "deadLetter", code: "MAX_DELIVER_EXCEEDED", reason: "failed 1 times; last error [HANDLER_FAILED]: boom" }],
  // environmental (outages): nak, capped lower, never dead-lettered
  ["an outage is naked with the usual delay while it is short", diskLow, 2, limits, {},
    { action: "nak", delayMs: 2000, code: "DISK_SPACE_LOW", reason: "disk full" }],
  ["an outage's delay is capped at ENVIRONMENT_MAX_BACKOFF_MS", s3Down, 8, limits, {},
    { action: "nak", delayMs: ENVIRONMENT_MAX_BACKOFF_MS, code: "SINK_UNAVAILABLE", reason: "503" }],
  ["an outage is never dead-lettered, however many deliveries", diskLow, 1000, limits, {},
    { action: "nak", delayMs: ENVIRONMENT_MAX_BACKOFF_MS, code: "DISK_SPACE_LOW", reason: "disk full" }],
  ["an outage's delay also respects a lower maxBackoffMs", s3Down, 9, { ...limits, maxBackoffMs: 500 }, {},
    { action: "nak", delayMs: 500, code: "SINK_UNAVAILABLE", reason: "503" }],
];

describe("deliveryDecision", () => {
  it.each(table)("%s", (_name, error, deliveryCount, l, facts, want) => {
    expect(deliveryDecision(error, deliveryCount, l, facts)).toEqual(want);
  });
});

describe("deadLetterFailedDecision", () => {
  it("naks with the delivery's usual delay and says what was being dead-lettered", () => {
    expect(
      deadLetterFailedDecision(new Error("no DLQ stream"), { code: "ENVELOPE_INVALID", reason: "bad" }, 3, limits),
    ).toEqual({
      action: "nak",
      delayMs: 4000,
      code: "DLQ_PUBLISH_FAILED",
      reason: "no DLQ stream (while dead-lettering: [ENVELOPE_INVALID] bad)",
    });
  });
  it("is capped at maxBackoffMs only, not at the outage bound", () => {
    const delay = deadLetterFailedDecision(new Error("x"), { code: "HANDLER_PERMANENT", reason: "y" }, 11, limits);
    expect(delay.delayMs).toBe(15 * 60_000);
  });
});

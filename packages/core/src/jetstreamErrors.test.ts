import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { isConsumerNotFound, isStreamNotFound } from "./jetstreamErrors.js";

function apiError(errCode: number, description: string): JetStreamApiError {
  return new JetStreamApiError({ code: 404, err_code: errCode, description });
}

describe("JetStream not-found checks", () => {
  const streamMissing = apiError(JetStreamApiCodes.StreamNotFound, "stream not found");
  const consumerMissing = apiError(JetStreamApiCodes.ConsumerNotFound, "consumer not found");

  it("tell a missing stream from a missing consumer by the API error code", () => {
    expect(isStreamNotFound(streamMissing)).toBe(true);
    expect(isConsumerNotFound(streamMissing)).toBe(false);
    expect(isConsumerNotFound(consumerMissing)).toBe(true);
    expect(isStreamNotFound(consumerMissing)).toBe(false);
  });

  it("ignore other API errors and anything that merely says 'not found'", () => {
    expect(isStreamNotFound(apiError(JetStreamApiCodes.NoMessageFound, "no message found"))).toBe(false);
    expect(isStreamNotFound(new Error("stream not found"))).toBe(false);
    expect(isConsumerNotFound(new Error("consumer not found"))).toBe(false);
    expect(isStreamNotFound(undefined)).toBe(false);
    expect(isConsumerNotFound("consumer not found")).toBe(false);
  });
});

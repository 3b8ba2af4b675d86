import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { isConsumerNotFound, isCreateRace, isStreamNotFound } from "./jetstreamErrors.js";

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

describe("isCreateRace (a create that found the object already made)", () => {
  it("matches the name-taken and subjects-overlap codes only", () => {
    expect(isCreateRace(apiError(10058, "stream name already in use with a different configuration"))).toBe(true);
    expect(isCreateRace(apiError(10065, "subjects overlap with an existing stream"))).toBe(true);
    expect(isCreateRace(apiError(10013, "consumer name already in use"))).toBe(true);
    expect(isCreateRace(apiError(JetStreamApiCodes.StreamNotFound, "stream not found"))).toBe(false);
    expect(isCreateRace(new Error("subjects overlap with an existing stream"))).toBe(false);
  });
});

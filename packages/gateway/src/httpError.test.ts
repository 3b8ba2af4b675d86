import { describe, expect, it } from "vitest";
import { SinkError } from "@filerelay/core";
import { errorReply, HttpError } from "./httpError.js";

describe("error replies", () => {
  it("HttpError keeps its status and code", () => {
    expect(errorReply(new HttpError(413, "UPLOAD_TOO_LARGE", "too big"))).toEqual({
      status: 413,
      body: { error: "too big", code: "UPLOAD_TOO_LARGE" },
    });
  });
  it("maps core codes to statuses", () => {
    expect(errorReply(new SinkError("PATH_UNSAFE", "x")).status).toBe(400);
    expect(errorReply(new SinkError("PUBLISH_FAILED", "x")).status).toBe(503);
  });
  it("never shows an unexpected error's message or stack", () => {
    const reply = errorReply(new Error("ENOENT /secret/path at foo.js:12"));
    expect(reply).toEqual({ status: 500, body: { error: "internal error", code: "INTERNAL_ERROR" } });
  });
  it("keeps Fastify's own 4xx (body too large, bad JSON)", () => {
    expect(errorReply(Object.assign(new Error("Body is too large"), { statusCode: 413 })).body.code).toBe(
      "UPLOAD_TOO_LARGE",
    );
    expect(errorReply(Object.assign(new Error("Unexpected token"), { statusCode: 400 })).status).toBe(400);
  });
});

import { describe, expect, it } from "vitest";
import { EnvelopeError } from "./errors.js";
import {
  envelopeJsonSchema,
  envelopeToHeaders,
  envelopeToRecord,
  fileVersionId,
  parseEnvelope,
  type Envelope,
} from "./envelope.js";

const sample: Envelope = {
  id: fileVersionId("fp-1"),
  source: "api",
  type: "io.filerelay.file.v1",
  time: new Date("2026-11-23T10:00:00.000Z"),
  subject: "orders/2026/order 1.csv",
  contentType: "text/csv",
  filename: "order 1.csv",
  size: 1234,
  sha256: "a".repeat(64),
  mtime: new Date("2026-11-23T09:59:58.000Z"),
  payload: { kind: "object", bucket: "FILES_payloads", name: "abc" },
};

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof EnvelopeError) return err.code;
    throw err;
  }
  return "no error";
}

describe("envelope", () => {
  it("round-trips through NATS headers", () => {
    const hdrs = envelopeToHeaders(sample);
    expect(hdrs.get("Nats-Msg-Id")).toBe(sample.id);
    expect(hdrs.get("ce-specversion")).toBe("1.0");
    expect(parseEnvelope(hdrs)).toEqual(sample);
  });

  it("gives the same file version the same id, and another version another id", () => {
    expect(fileVersionId("fp-1")).toBe(fileVersionId("fp-1"));
    expect(fileVersionId("fp-1")).not.toBe(fileVersionId("fp-2"));
    expect(fileVersionId("fp-1")).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-/);
  });

  it("names every missing or malformed header", () => {
    const rec: Record<string, string> = { ...envelopeToRecord(sample) };
    delete rec["ce-sha256"];
    rec["ce-filesize"] = "-5";
    rec["ce-specversion"] = "0.3";
    const err = (() => {
      try {
        parseEnvelope(rec);
      } catch (e) {
        return e as EnvelopeError;
      }
      throw new Error("expected failure");
    })();
    expect(err.code).toBe("ENVELOPE_INVALID");
    expect(err.message).toContain("ce-sha256: missing");
    expect(err.message).toContain("ce-filesize:");
    expect(err.message).toContain("ce-specversion:");
  });

  it("rejects unsafe paths and names with distinct codes", () => {
    const rec = (patch: Record<string, string>) => ({ ...envelopeToRecord(sample), ...patch });
    expect(codeOf(() => parseEnvelope(rec({ "ce-subject": "../../etc/passwd", "ce-filename": "passwd" })))).toBe(
      "PATH_UNSAFE",
    );
    expect(codeOf(() => parseEnvelope(rec({ "ce-subject": "/etc/passwd", "ce-filename": "passwd" })))).toBe(
      "PATH_UNSAFE",
    );
    expect(codeOf(() => parseEnvelope(rec({ "ce-subject": "a/../b", "ce-filename": "b" })))).toBe("PATH_UNSAFE");
    expect(codeOf(() => parseEnvelope(rec({ "ce-subject": "x\u0000y", "ce-filename": "x\u0000y" })))).toBe(
      "NAME_INVALID",
    );
    const long = "n".repeat(300);
    expect(codeOf(() => parseEnvelope(rec({ "ce-subject": long, "ce-filename": long })))).toBe("NAME_INVALID");
    expect(codeOf(() => parseEnvelope(rec({ "ce-filename": "other.csv" })))).toBe("ENVELOPE_INVALID");
    expect(codeOf(() => parseEnvelope(rec({ "ce-payload": "s3:bucket/key" })))).toBe("ENVELOPE_INVALID");
  });

  it("exports a JSON Schema listing every header", () => {
    const schema = envelopeJsonSchema() as { properties: Record<string, unknown>; required: string[] };
    expect(Object.keys(schema.properties)).toContain("ce-payload");
    expect(schema.required).toContain("ce-sha256");
    expect(schema.required).not.toContain("Nats-Msg-Id");
  });
});

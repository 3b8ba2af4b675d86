import { describe, expect, it } from "vitest";
import type { PayloadObjectInfo } from "./payload/objectFormat.js";
import { objectNameIn, releaseVerdict } from "./payloadRelease.js";

const sha = "a".repeat(64);
const times = { envelopeTime: 10_000, objectTime: 9_990 };
const object = (over: Partial<PayloadObjectInfo> = {}): PayloadObjectInfo => ({
  name: "n",
  bucket: "FILES_payloads",
  nuid: "NUID",
  size: 1,
  chunks: 1,
  digest: "SHA-256=x",
  mtime: new Date().toISOString(),
  metadata: { "filerelay-sha256": sha },
  ...over,
});

describe("releaseVerdict", () => {
  it("releases an object once its envelope is gone, unpinned, with the envelope's content", () => {
    expect(releaseVerdict({ envelopeStored: false, pinned: false, object: object(), sha256: sha, ...times })).toBe(
      "release",
    );
  });
  it("keeps it while another group has not acknowledged (the stream still holds the envelope)", () => {
    expect(releaseVerdict({ envelopeStored: true, pinned: false, object: object(), sha256: sha, ...times })).toBe(
      "referenced",
    );
  });
  it("leaves a pinned object (a dead letter references it) to the sweep", () => {
    expect(releaseVerdict({ envelopeStored: false, pinned: true, object: object(), sha256: sha, ...times })).toBe(
      "pinned",
    );
  });
  it("does nothing for a missing or deleted object", () => {
    expect(releaseVerdict({ envelopeStored: false, pinned: false, object: null, sha256: sha, ...times })).toBe(
      "absent",
    );
    expect(
      releaseVerdict({
        envelopeStored: false,
        pinned: false,
        object: object({ deleted: true }),
        sha256: sha,
        ...times,
      }),
    ).toBe("absent");
  });
  it("leaves an object that holds other content under the same name", () => {
    expect(
      releaseVerdict({
        envelopeStored: false,
        pinned: false,
        object: object({ metadata: { "filerelay-sha256": "b".repeat(64) } }),
        sha256: sha,
        ...times,
      }),
    ).toBe("replaced");
  });
  it("leaves a newer upload under the same name (stored well after the envelope)", () => {
    const late = { envelopeTime: 10_000, objectTime: 10_000 + 5_000 };
    expect(releaseVerdict({ envelopeStored: false, pinned: false, object: object(), sha256: sha, ...late })).toBe(
      "replaced",
    );
    // Clock differences between servers are not a newer upload.
    const skewed = { envelopeTime: 10_000, objectTime: 10_500 };
    expect(releaseVerdict({ envelopeStored: false, pinned: false, object: object(), sha256: sha, ...skewed })).toBe(
      "release",
    );
  });
  it("reads the digest of an object written by another Object Store client", () => {
    const digest = `SHA-256=${Buffer.from(sha, "hex").toString("base64").replace(/\+/g, "-").replace(/\//g, "_")}`;
    expect(
      releaseVerdict({
        envelopeStored: false,
        pinned: false,
        object: object({ metadata: {}, digest }),
        sha256: sha,
        ...times,
      }),
    ).toBe("release");
  });
});

describe("objectNameIn", () => {
  it("names the object of this bucket only", () => {
    expect(objectNameIn({ "ce-payload": "object:FILES_payloads/abc" }, "FILES_payloads")).toBe("abc");
    expect(objectNameIn({ "ce-payload": "object:OTHER/abc" }, "FILES_payloads")).toBeUndefined();
    expect(objectNameIn({ "ce-payload": "inline" }, "FILES_payloads")).toBeUndefined();
    expect(objectNameIn({ "ce-payload": "garbage" }, "FILES_payloads")).toBeUndefined();
    expect(objectNameIn({}, "FILES_payloads")).toBeUndefined();
  });
});

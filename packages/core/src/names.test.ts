import { describe, expect, it } from "vitest";
import { jetstreamNames, kvStreamName, leaseBucketName, objectStreamName, pinBucketName } from "./names.js";

describe("JetStream names", () => {
  it("derive every stream and bucket of a deployment from STREAM", () => {
    expect(jetstreamNames({ STREAM: "FILES", SUBJECT: "files.input" })).toEqual({
      stream: "FILES",
      streamSubjects: ["files.>"],
      dlqStream: "FILES_DLQ",
      dlqSubjects: ["filerelay.dlq.>"],
      fingerprintBucket: "FILES_fingerprints",
      fingerprintStream: "KV_FILES_fingerprints",
      claimBucket: "FILES_claims",
      claimStream: "KV_FILES_claims",
      payloadBucket: "FILES_payloads",
      payloadStream: "OBJ_FILES_payloads",
      pinBucket: "FILES_pins",
      leaseBucket: "FILES_leases",
      statusStream: "FILES_STATUS",
      statusPrefix: "filerelay.status.FILES",
      progressPrefix: "filerelay.progress.FILES",
    });
  });

  it("name the streams behind buckets as every NATS client does", () => {
    expect(objectStreamName("FILES_payloads")).toBe("OBJ_FILES_payloads");
    expect(kvStreamName("FILES_pins")).toBe("KV_FILES_pins");
    expect(pinBucketName("X")).toBe("X_pins");
    expect(leaseBucketName("X")).toBe("X_leases");
  });
});

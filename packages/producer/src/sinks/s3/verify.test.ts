import { describe, expect, it } from "vitest";
import type { Envelope } from "@filerelay/core";
import { S3_METADATA } from "./metadata.js";
import { objectState, verifyProblems } from "./verify.js";

const sha = "a".repeat(64);
const envelope = { id: "00000000-0000-4000-8000-000000000001", sha256: sha, size: 10 } as Envelope;
const head = (meta: Record<string, string>, size = 10, checksum?: string) => ({
  $metadata: {},
  Metadata: meta,
  ContentLength: size,
  ...(checksum ? { ChecksumSHA256: checksum } : {}),
});

describe("what a key holds for a file version", () => {
  it("tells absent, the same content, an interrupted attempt of ours and anything else apart", () => {
    expect(objectState(undefined, envelope)).toBe("absent");
    expect(objectState(head({ [S3_METADATA.sha256]: sha }), envelope)).toBe("same");
    // Same version by id, other bytes: an upload of ours that went wrong.
    expect(objectState(head({ [S3_METADATA.id]: envelope.id, [S3_METADATA.sha256]: "b".repeat(64) }), envelope)).toBe(
      "ours-broken",
    );
    expect(objectState(head({ [S3_METADATA.sha256]: sha }, 9), envelope)).toBe("ours-broken");
    expect(objectState(head({ [S3_METADATA.sha256]: "b".repeat(64) }), envelope)).toBe("other");
    expect(objectState(head({}), envelope)).toBe("other");
  });

  it("verifies size, sha256 metadata and a full-object checksum after upload", () => {
    const full = Buffer.from(sha, "hex").toString("base64");
    expect(verifyProblems(head({ [S3_METADATA.sha256]: sha }, 10, full), envelope)).toEqual([]);
    // Multipart checksums ("…-N") are of the parts: not compared.
    expect(verifyProblems(head({ [S3_METADATA.sha256]: sha }, 10, "xyz-3"), envelope)).toEqual([]);
    expect(verifyProblems(undefined, envelope)).toEqual(["object is missing after upload"]);
    expect(verifyProblems(head({ [S3_METADATA.sha256]: sha }, 11, "bad"), envelope)).toHaveLength(2);
  });
});

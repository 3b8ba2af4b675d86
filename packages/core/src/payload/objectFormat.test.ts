import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  digestToHex,
  hexToDigest,
  objectChunkFilter,
  objectChunkId,
  objectChunkSubject,
  objectMetaFilter,
  objectMetaSubject,
  objectSha256,
  type PayloadObjectInfo,
} from "./objectFormat.js";

describe("object store wire format", () => {
  it("names subjects as every Object Store client does (padded base64url meta names)", () => {
    expect(objectChunkSubject("b", "NUID1")).toBe("$O.b.C.NUID1");
    expect(objectMetaSubject("b", "hello")).toBe("$O.b.M.aGVsbG8=");
    // '+' and '/' of standard base64 become '-' and '_'.
    expect(objectMetaSubject("b", "\u00fb\u00ff")).toBe("$O.b.M.w7vDvw==");
    expect(objectMetaSubject("b", "??>")).toBe("$O.b.M.Pz8-");
    expect(objectChunkFilter("b")).toBe("$O.b.C.>");
    expect(objectMetaFilter("b")).toBe("$O.b.M.>");
  });

  it("reads the upload id back from a chunk subject of the same bucket only", () => {
    expect(objectChunkId("b", objectChunkSubject("b", "NUID1"))).toBe("NUID1");
    expect(objectChunkId("b", "$O.other.C.NUID1")).toBeUndefined();
    expect(objectChunkId("b", objectMetaSubject("b", "x"))).toBeUndefined();
  });

  it("encodes the digest as SHA-256=<base64url> and reads only that form back", () => {
    const hex = createHash("sha256").update("x").digest("hex");
    const digest = hexToDigest(hex);
    expect(digest).toMatch(/^SHA-256=[-\w]+=*$/);
    expect(digestToHex(digest)).toBe(hex);
    expect(digestToHex("SHA-512=abc")).toBeUndefined();
    expect(digestToHex("SHA-256=c2hvcnQ=")).toBeUndefined();
  });

  it("prefers our own sha256 metadata over the digest field", () => {
    const hex = "a".repeat(64);
    const info = { digest: hexToDigest("b".repeat(64)) } as PayloadObjectInfo;
    expect(objectSha256(info)).toBe("b".repeat(64));
    expect(objectSha256({ ...info, metadata: { "filerelay-sha256": hex } })).toBe(hex);
    expect(objectSha256({ ...info, digest: "SHA-512=abc" })).toBeUndefined();
  });
});

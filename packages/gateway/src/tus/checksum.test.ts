import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { checksumHasher, parseUploadChecksum } from "./checksum.js";

describe("tus Upload-Checksum", () => {
  it("parses algorithm and base64 digest", () => {
    expect(parseUploadChecksum(null)).toBeUndefined();
    expect(parseUploadChecksum("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=")).toEqual({
      algorithm: "sha1",
      digest: "Kq5sNclPz7QV2+lfQIuc6R7oRu0=",
    });
    expect(parseUploadChecksum("SHA256 abc=")?.algorithm).toBe("sha256");
  });

  it("refuses unknown algorithms and malformed values with a tus 400", () => {
    expect(() => parseUploadChecksum("crc32 abc")).toThrow();
    expect(() => parseUploadChecksum("sha1")).toThrow();
    try {
      parseUploadChecksum("whirlpool abc");
    } catch (err) {
      expect(err).toMatchObject({ status_code: 400 });
    }
  });

  it("matches only the right digest", () => {
    const body = Buffer.from("hello tus");
    const digest = createHash("sha1").update(body).digest("base64");
    const good = checksumHasher({ algorithm: "sha1", digest });
    good.update(body.subarray(0, 3));
    good.update(body.subarray(3));
    expect(good.matches()).toBe(true);
    const bad = checksumHasher({ algorithm: "sha1", digest });
    bad.update(body.subarray(0, 3));
    expect(bad.matches()).toBe(false);
  });
});

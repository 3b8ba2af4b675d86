import { describe, expect, it } from "vitest";
import { targetBucket } from "./s3Sink.js";

describe("targetBucket", () => {
  it("uses S3_BUCKET without a ce-destination", () => {
    expect(targetBucket("main", ["a"], undefined)).toEqual({ bucket: "main" });
  });
  it("honours a ce-destination listed in S3_ALLOWED_BUCKETS", () => {
    expect(targetBucket("main", ["a", "b"], "b")).toEqual({ bucket: "b" });
  });
  it("refuses one not listed, or any when the list is unset, falling back to S3_BUCKET", () => {
    expect(targetBucket("main", ["a"], "evil")).toEqual({ bucket: "main", refused: "evil" });
    expect(targetBucket("main", undefined, "a")).toEqual({ bucket: "main", refused: "a" });
  });
  it("accepts S3_BUCKET itself as a destination", () => {
    expect(targetBucket("main", undefined, "main")).toEqual({ bucket: "main" });
  });
});

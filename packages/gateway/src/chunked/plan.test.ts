import { describe, expect, it } from "vitest";
import { chunkFileName, chunkNumberOf, expectedChunkLength, isExpired, missingChunks, totalChunks } from "./plan.js";

describe("chunk bookkeeping", () => {
  const plan = { size: 10 * 1024 + 5, chunkSize: 1024 };

  it("counts chunks; the last one may be shorter", () => {
    expect(totalChunks(plan)).toBe(11);
    expect(totalChunks({ size: 2048, chunkSize: 1024 })).toBe(2);
    expect(totalChunks({ size: 0, chunkSize: 1024 })).toBe(0);
    expect(expectedChunkLength(plan, 1)).toBe(1024);
    expect(expectedChunkLength(plan, 10)).toBe(1024);
    expect(expectedChunkLength(plan, 11)).toBe(5);
    expect(expectedChunkLength({ size: 2048, chunkSize: 1024 }, 2)).toBe(1024);
  });

  it("has no chunk 0, past the end, or fractional", () => {
    expect(expectedChunkLength(plan, 0)).toBeUndefined();
    expect(expectedChunkLength(plan, 12)).toBeUndefined();
    expect(expectedChunkLength(plan, 1.5)).toBeUndefined();
  });

  it("lists missing chunks whatever order (and how often) they arrived", () => {
    expect(missingChunks(plan, [11, 3, 3, 1, 2])).toEqual([4, 5, 6, 7, 8, 9, 10]);
    expect(
      missingChunks(
        plan,
        Array.from({ length: 11 }, (_, i) => 11 - i),
      ),
    ).toEqual([]);
  });

  it("names chunk files so they sort and parse back", () => {
    expect(chunkFileName(7)).toBe("chunk-000007");
    expect(chunkNumberOf(chunkFileName(123456))).toBe(123456);
    expect(chunkNumberOf(".chunk-000007.ab12.tmp")).toBeUndefined();
    expect(chunkNumberOf("manifest.json")).toBeUndefined();
  });

  it("expires after UPLOAD_EXPIRY without activity", () => {
    expect(isExpired(1000, 1000 + 60_000, 60_000)).toBe(false);
    expect(isExpired(1000, 1000 + 60_001, 60_000)).toBe(true);
  });
});

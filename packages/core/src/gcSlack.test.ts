import { describe, expect, it } from "vitest";
import { heapGrowingPercent, MIN_SLACK_BYTES } from "./gcSlack.js";

const MiB = 1024 * 1024;

describe("heapGrowingPercent (room between a small live heap and the next full collection)", () => {
  it("leaves at least MIN_SLACK_BYTES of room, in 25 % steps, never beyond V8's own maximum of 300 %", () => {
    expect(heapGrowingPercent(16 * MiB)).toBe(300);
    expect(heapGrowingPercent(1)).toBe(300);
    expect(heapGrowingPercent(0)).toBe(300);
    expect(heapGrowingPercent(32 * MiB)).toBe(200);
    expect(heapGrowingPercent(40 * MiB)).toBe(175);
    for (const live of [22, 30, 40, 50, 63].map((m) => m * MiB)) {
      const p = heapGrowingPercent(live);
      expect(live * (p / 100)).toBeGreaterThanOrEqual(MIN_SLACK_BYTES);
      expect(p % 25).toBe(0);
    }
  });

  it("hands a large live heap back to V8's own heuristic (0), so its memory bound is unchanged", () => {
    expect(heapGrowingPercent(MIN_SLACK_BYTES)).toBe(0);
    expect(heapGrowingPercent(200 * MiB)).toBe(0);
  });
});

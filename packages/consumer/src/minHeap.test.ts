import { describe, expect, it } from "vitest";
import { MinHeap } from "./minHeap.js";

describe("MinHeap", () => {
  it("pops in order for any insertion order", () => {
    const heap = new MinHeap<number>((a, b) => a < b);
    const values = Array.from({ length: 500 }, (_, i) => (i * 7919) % 1009);
    for (const v of values) heap.push(v);
    expect(heap.size).toBe(500);
    expect(heap.peek()).toBe(Math.min(...values));
    const out: number[] = [];
    for (let v = heap.pop(); v !== undefined; v = heap.pop()) out.push(v);
    expect(out).toEqual([...values].sort((a, b) => a - b));
    expect(heap.size).toBe(0);
  });
});

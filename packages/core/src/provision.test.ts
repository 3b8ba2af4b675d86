import { describe, expect, it } from "vitest";
import { groupAckWait } from "./provision.js";

describe("groupAckWait (what a starting member leaves on its group's durable)", () => {
  it("keeps the durable's value when none is wanted or it is the same", () => {
    expect(groupAckWait(30_000, undefined, false)).toBe(30_000);
    expect(groupAckWait(30_000, undefined, true)).toBe(30_000);
    expect(groupAckWait(5000, 5000, true)).toBe(5000);
  });
  it("raises it, even under active members (they only keep alive earlier than needed)", () => {
    expect(groupAckWait(2000, 20_000, true)).toBe(20_000);
    expect(groupAckWait(2000, 20_000, false)).toBe(20_000);
  });
  it("lowers it only while no member is active (one pacing from the old value would be too slow)", () => {
    expect(groupAckWait(20_000, 2000, true)).toBe(20_000);
    expect(groupAckWait(20_000, 2000, false)).toBe(2000);
  });
});

import { describe, expect, it } from "vitest";
import { leaseDecision } from "./lease.js";

const now = 1_000_000;
const entry = (value: unknown, revision = 7) => ({ value: JSON.stringify(value), revision });

describe("leaseDecision", () => {
  it("creates the lease when nobody ever held it (or it was deleted)", () => {
    expect(leaseDecision(null, now)).toEqual({ action: "create" });
  });
  it("waits while another holder's lease runs", () => {
    expect(leaseDecision(entry({ holder: "b", until: now + 1 }), now)).toEqual({
      action: "wait",
      holder: "b",
      until: now + 1,
    });
  });
  it("takes over a lease that ran out (a crashed holder), at the revision it read", () => {
    expect(leaseDecision(entry({ holder: "b", until: now }), now)).toEqual({ action: "take", revision: 7 });
  });
  it("takes over an unreadable lease", () => {
    expect(leaseDecision({ value: "{not json", revision: 3 }, now)).toEqual({ action: "take", revision: 3 });
    expect(leaseDecision(entry({ until: now + 10 }), now)).toEqual({ action: "take", revision: 7 });
  });
});

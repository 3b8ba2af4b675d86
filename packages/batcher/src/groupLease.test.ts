import { describe, expect, it } from "vitest";
import { groupLeaseKey, leaseRenewEveryMs, leaseTrustedUntil } from "./groupLease.js";

describe("the batch group's lease", () => {
  it("is renewed three times per lease, so two renewals may fail before it is in doubt", () => {
    expect(leaseRenewEveryMs(15_000)).toBe(5000);
    expect(leaseRenewEveryMs(100)).toBe(100);
  });

  it("is trusted until a margin before it runs out, and that is after the next two renewals", () => {
    const sent = 1_000_000;
    expect(leaseTrustedUntil(sent, 15_000)).toBe(sent + 12_000);
    expect(leaseTrustedUntil(sent, 1000)).toBe(sent + 750);
    for (const d of [1000, 3000, 15_000, 600_000]) {
      expect(leaseTrustedUntil(sent, d)).toBeLessThan(sent + d);
      expect(leaseTrustedUntil(sent, d)).toBeGreaterThan(sent + 2 * leaseRenewEveryMs(d));
    }
  });

  it("is one KV key per events stream and group", () => {
    expect(groupLeaseKey("EVENTS", "batcher")).toBe("batcher.EVENTS.batcher");
    expect(groupLeaseKey("EVENTS", "b-2")).not.toBe(groupLeaseKey("EVENTS2", "b-2"));
  });
});

import { describe, expect, it } from "vitest";
import { OutageGate } from "./outageGate.js";

describe("OutageGate", () => {
  it("lets everything through while open", async () => {
    const gate = new OutageGate({ probeIntervalMs: 1000 });
    expect(await gate.pass(new AbortController().signal)).toEqual({ probe: false });
    expect(gate.closedBecause).toBeUndefined();
  });

  it("while closed, lets one probe through per interval; a successful probe releases every waiter", async () => {
    const gate = new OutageGate({ probeIntervalMs: 100 });
    const signal = new AbortController().signal;
    gate.close("OUTPUT_DIR /out is not writable");
    expect(gate.closedBecause).toBe("OUTPUT_DIR /out is not writable");
    const started = Date.now();
    const passes = [gate.pass(signal), gate.pass(signal), gate.pass(signal)];
    const first = await Promise.race(passes.map((p, i) => p.then((r) => ({ i, r }))));
    expect(first.r).toEqual({ probe: true });
    expect(Date.now() - started).toBeGreaterThanOrEqual(90);
    // The probe failed: the next one only after another interval; the others keep waiting.
    gate.settle(true, false);
    const second = await Promise.race(passes.filter((_, i) => i !== first.i).map((p, i) => p.then((r) => ({ i, r }))));
    expect(second.r).toEqual({ probe: true });
    // This probe succeeds: the gate opens and the last waiter goes without probing.
    gate.settle(true, true);
    const rest = await Promise.all(passes);
    expect(rest.filter((r) => r.probe)).toHaveLength(2);
    expect(gate.closedBecause).toBeUndefined();
  });

  it("a waiter leaves with SHUTDOWN when the service stops", async () => {
    const gate = new OutageGate({ probeIntervalMs: 60_000 });
    const stop = new AbortController();
    gate.close("refused");
    const waiting = gate.pass(stop.signal).catch((e: unknown) => e);
    stop.abort(new Error("SIGTERM received"));
    expect(await waiting).toMatchObject({ code: "SHUTDOWN" });
  });
});

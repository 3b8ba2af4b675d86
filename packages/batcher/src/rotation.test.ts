import { describe, expect, it } from "vitest";
import { closeBeforeAdding, MAX_WINDOW_KEYS, MAX_WINDOW_RUNS, rotationDue } from "./rotation.js";

const roomy = { runs: 1, keys: 1, newKey: false, extendsRun: true };

describe("rotation", () => {
  it("closes a non-empty window by time once the interval since its first event has passed", () => {
    expect(rotationDue({ openedAt: 1000, events: 3 }, 60_999, 60_000)).toBeUndefined();
    expect(rotationDue({ openedAt: 1000, events: 3 }, 61_000, 60_000)).toBe("time");
  });

  it("never closes an empty window (no file for an idle interval)", () => {
    expect(rotationDue({ openedAt: undefined, events: 0 }, 10 ** 12, 60_000)).toBeUndefined();
  });

  it("closes before an event would take its batch past MAX_BATCH_BYTES", () => {
    expect(closeBeforeAdding({ bytes: 900, events: 9 }, 100, 1000, roomy)).toBe(false);
    expect(closeBeforeAdding({ bytes: 901, events: 9 }, 100, 1000, roomy)).toBe(true);
  });

  it("lets one event larger than the limit make a batch of its own", () => {
    expect(closeBeforeAdding(undefined, 5000, 1000, roomy)).toBe(false);
    expect(closeBeforeAdding({ bytes: 0, events: 0 }, 5000, 1000, roomy)).toBe(false);
  });

  it("closes when the window's bookkeeping is full", () => {
    expect(closeBeforeAdding(undefined, 1, 1000, { ...roomy, runs: MAX_WINDOW_RUNS, extendsRun: false })).toBe(true);
    expect(closeBeforeAdding(undefined, 1, 1000, { ...roomy, runs: MAX_WINDOW_RUNS, extendsRun: true })).toBe(false);
    expect(closeBeforeAdding(undefined, 1, 1000, { ...roomy, keys: MAX_WINDOW_KEYS, newKey: true })).toBe(true);
  });
});

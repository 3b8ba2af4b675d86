import { describe, expect, it } from "vitest";
import { backoffDelay, backoffDelays, retry } from "./backoff.js";

describe("backoff", () => {
  it("defaults to 1 s, 2 s, 4 s, 8 s", () => {
    expect(backoffDelays()).toEqual([1000, 2000, 4000, 8000]);
  });
  it("caps at maxMs and jitters within bounds", () => {
    expect(backoffDelays({ baseMs: 100, retries: 6, maxMs: 1000 })).toEqual([100, 200, 400, 800, 1000, 1000]);
    // However many failures: 2^n overflows to Infinity, which the cap still bounds.
    expect(backoffDelay(5000, { baseMs: 250, maxMs: 8000 })).toBe(8000);
    for (let i = 0; i < 50; i++) {
      const d = backoffDelay(3, { baseMs: 100, jitter: 0.5 });
      expect(d).toBeGreaterThanOrEqual(600);
      expect(d).toBeLessThanOrEqual(1000);
    }
  });
});

describe("retry", () => {
  it("retries until success and reports each retry", async () => {
    const seen: number[] = [];
    const result = await retry(
      (attempt) => (attempt < 3 ? Promise.reject(new Error(`fail ${attempt}`)) : Promise.resolve("ok")),
      { baseMs: 1, retries: 4 },
      { onRetry: (_err, attempt, delay) => seen.push(attempt * 1000 + delay) },
    );
    expect(result).toBe("ok");
    expect(seen).toEqual([1001, 2002]);
  });
  it("gives up after the configured retries with the last error", async () => {
    let calls = 0;
    await expect(
      retry(
        () => {
          calls++;
          return Promise.reject(new Error("always"));
        },
        { baseMs: 1, retries: 2 },
      ),
    ).rejects.toThrow("always");
    expect(calls).toBe(3);
  });
  it("stops at once when shouldRetry says no", async () => {
    let calls = 0;
    await expect(
      retry(
        () => {
          calls++;
          return Promise.reject(new Error("permanent"));
        },
        { baseMs: 1 },
        { shouldRetry: () => false },
      ),
    ).rejects.toThrow("permanent");
    expect(calls).toBe(1);
  });
  it("aborts a pending wait on shutdown", async () => {
    const ac = new AbortController();
    const p = retry(() => Promise.reject(new Error("x")), { baseMs: 60_000 }, { signal: ac.signal });
    setImmediate(() => ac.abort(new Error("shutdown")));
    await expect(p).rejects.toThrow("shutdown");
  });
});

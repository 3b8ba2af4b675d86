import { describe, expect, it } from "vitest";
import { createSemaphore } from "./semaphore.js";

describe("createSemaphore", () => {
  it("lets at most `permits` hold at once, hands permits over in arrival order, and ignores a second release", async () => {
    const sem = createSemaphore(2);
    const r1 = await sem.acquire();
    const r2 = await sem.acquire();
    expect(sem.available).toBe(0);
    const order: number[] = [];
    const p3 = sem.acquire().then((r) => (order.push(3), r));
    const p4 = sem.acquire().then((r) => (order.push(4), r));
    expect(sem.waiting).toBe(2);
    r1();
    r1(); // idempotent: must not free a second permit
    const r3 = await p3;
    expect(order).toEqual([3]);
    expect(sem.waiting).toBe(1);
    r2();
    const r4 = await p4;
    expect(order).toEqual([3, 4]);
    r3();
    r4();
    expect(sem.available).toBe(2);
  });
});

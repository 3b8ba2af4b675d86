import { describe, expect, it } from "vitest";
import { createLogger } from "@filerelay/core";
import { FileSchedule } from "./fileSchedule.js";

const file = (rel: string, mtimeMs = 1000) => ({ rel, size: 1, mtimeMs, ino: 1, ctimeMs: mtimeMs });

function schedule(window = 4, stabilityMs = 60_000): FileSchedule {
  return new FileSchedule({
    stabilityMs,
    readyMarkers: false,
    log: createLogger({ LOG_LEVEL: "silent", LOG_PRETTY: false }, { service: "test" }),
    onDue: () => undefined,
    limits: { window, eventShare: 2, resumeAt: window - 2 },
  });
}

describe("FileSchedule working window", () => {
  it("counts files in progress, not settled ones, and resumes a paused walk once they drain", async () => {
    const s = schedule(4);
    for (let i = 0; i < 4; i++) s.observe(file(`f${i}`), Date.now());
    expect(s.inProgress).toBe(4);
    expect(s.hasRoom("walk")).toBe(false);
    expect(s.hasRoom("event")).toBe(true);
    let resumed = false;
    const room = s.whenRoom().then(() => (resumed = true));
    s.settle(s.files.get("f0")!, "done");
    await Promise.resolve();
    expect(s.inProgress).toBe(3);
    expect(resumed).toBe(false);
    s.delete(s.files.get("f1")!);
    await room;
    expect(resumed).toBe(true);
    expect(s.inProgress).toBe(2);
    // Settled files become compact records; one that changes is in progress again, as a new version.
    expect(s.files.has("f0")).toBe(false);
    expect(s.settled.get("f0")?.state).toBe("done");
    s.observe(file("f0"), Date.now(), 7);
    expect(s.inProgress).toBe(2);
    expect(s.settled.get("f0")?.seenInScan).toBe(7);
    s.observe({ ...file("f0"), size: 2 }, Date.now());
    expect(s.inProgress).toBe(3);
    expect(s.settled.has("f0")).toBe(false);
    expect(s.files.get("f0")).toMatchObject({ state: "waiting", size: 2, sawWrites: true });
    s.settle(s.files.get("f0")!, "failed");
    expect(s.files.size).toBe(2);
    expect(s.inProgress).toBe(2);
    expect(s.settled.counts()).toEqual({ done: 0, failed: 1 });
    s.stop();
  });

  it("a stopped schedule releases a paused walk", async () => {
    const s = schedule(1);
    s.observe(file("a"), Date.now());
    const room = s.whenRoom();
    s.stop();
    await expect(room).resolves.toBeUndefined();
  });

  it("workers take fresh files (from events) ahead of an older backlog, without starving it", () => {
    const s = schedule(100);
    for (let i = 0; i < 10; i++) {
      s.observe(file(`old${i}`, 1000 + i), Date.now());
      s.makeReady(s.files.get(`old${i}`)!);
    }
    for (let i = 0; i < 4; i++) {
      s.observe(file(`new${i}`, 9000 + i), Date.now(), undefined, true);
      s.makeReady(s.files.get(`new${i}`)!);
    }
    const order: string[] = [];
    for (let rec = s.popReady(); rec; rec = s.popReady()) {
      rec.state = "active";
      order.push(rec.rel);
    }
    expect(order.slice(0, 5)).toEqual(["new0", "new1", "new2", "old0", "new3"]);
    expect(order.length).toBe(14);
    s.stop();
  });

  it("holds walk-found files back while a walk reads on, then lets them in oldest mtime first; fresh files are not held", () => {
    const s = schedule(100, 0);
    s.hold(true);
    s.observe(file("young", 3000), Date.now() - 10);
    s.wake();
    s.observe(file("old", 1000), Date.now() - 10);
    s.observe(file("event", 5000), Date.now() - 10, undefined, true);
    s.wake();
    expect(s.popReady()?.rel).toBe("event");
    expect(s.popReady()).toBeUndefined();
    s.hold(false);
    expect(s.popReady()?.rel).toBe("old");
    expect(s.popReady()?.rel).toBe("young");
    s.stop();
  });
});

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Kvm } from "@nats-io/kv";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  batcherEnv,
  eventPublisher,
  httpGet,
  published,
  readOutputs,
  startBatcher,
  startBatchProducer,
} from "./batcher-support.js";
import { outcomeLines } from "./producer-support.js";
import { freePort, startNats, waitFor, type LogLine } from "./support/index.js";

// Two batchers of one BATCH_GROUP: one works, the other waits for the group's lease.

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "batcher-lease-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

async function idCounts(dir: string): Promise<Map<number, number>> {
  const counts = new Map<number, number>();
  for (const f of await readOutputs(dir)) {
    for (const line of f.content.toString("utf8").split("\n")) {
      if (!line) continue;
      const id = (JSON.parse(line) as { id: number }).id;
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
  }
  return counts;
}

const logTime = (l: LogLine) => (typeof l.time === "number" ? l.time : Date.parse(String(l.time)));
const HOLDING = "holding the lease of the batch group";
const isWaiting = (l: LogLine) => typeof l.msg === "string" && l.msg.startsWith("another replica holds the lease");

describe("batcher: one replica per BATCH_GROUP", () => {
  it("a second replica waits, not ready, publishing nothing; after SIGKILL of the holder it takes over within the lease and every event lands once; a clean stop gives the lease back", async () => {
    await using nats = await startNats();
    const out = join(root, "out");
    const leaseMs = 4000;
    const env = (name: string, port: number) =>
      batcherEnv(nats.url, join(root, `spool-${name}`), {
        BATCH_FORMAT: "jsonl",
        ROTATION_INTERVAL_MS: "1000",
        ROTATION_CHECK_MS: "100",
        EVENTS_ACK_WAIT_MS: "5000",
        BATCH_LEASE_MS: String(leaseMs),
        HTTP_PORT: String(port),
      });
    const [portA, portB, portC] = [await freePort(), await freePort(), await freePort()];
    await using producer = startBatchProducer(nats.url, out);
    await using pub = await eventPublisher(nats.url);
    await using a = startBatcher(env("a", portA));
    const holdingA = await a.waitForLog((l) => l.msg === HOLDING, 60_000);
    await a.waitForLog((l) => l.msg === "batcher started", 60_000);
    await using b = startBatcher(env("b", portB));
    const waitingB = await b.waitForLog(isWaiting, 60_000, "b waits for the lease");
    expect(waitingB.holder).toBe(holdingA.holder);
    expect((await httpGet(portA, "/readyz")).status).toBe(200);
    await waitFor(async () => (await httpGet(portB, "/readyz").catch(() => ({ status: 0 }))).status === 503, {
      timeoutMs: 30_000,
      message: "b's /readyz answers 503",
    });

    const total = 3000;
    let sent = 0;
    // A steady trickle (about 8 s), so the kill falls in an open window.
    const sending = (async () => {
      while (sent < total) {
        const n = Math.min(40, total - sent);
        const chunk = Array.from({ length: n }, (_, i) => JSON.stringify({ id: sent + i }));
        await pub.publishAll("events.lease", chunk, 8);
        sent += n;
        await new Promise((r) => setTimeout(r, 100));
      }
    })();

    let batchesPublished = 0;
    let c: Awaited<ReturnType<typeof startBatcher>> | undefined;
    try {
      await waitFor(() => published(a).length >= 2, { timeoutMs: 60_000, message: "a publishes batches" });
      const target = sent + 200;
      await waitFor(() => sent >= target || sent >= total, { timeoutMs: 60_000, message: "more events sent" });
      expect(sent, "the kill happens while events still arrive").toBeLessThan(total);
      // Only the holder works: the waiting replica never consumed, never published.
      expect(published(b)).toEqual([]);
      expect(b.logs().some((l) => l.msg === "consuming events")).toBe(false);
      expect((await httpGet(portB, "/readyz")).status).toBe(503);

      const killedAt = Date.now();
      await a.kill();
      batchesPublished += published(a).filter((l) => l.duplicate !== true).length;
      const holdingB = await b.waitForLog((l) => l.msg === HOLDING, 60_000, "b takes over");
      // The killed holder's lease ran out at most leaseMs after its last renewal (slack: a loaded machine).
      expect(logTime(holdingB) - killedAt).toBeLessThanOrEqual(leaseMs + 2000);
      await b.waitForLog((l) => l.msg === "batcher started", 60_000);
      await waitFor(async () => (await httpGet(portB, "/readyz")).status === 200, {
        timeoutMs: 30_000,
        message: "b ready",
      });

      await sending;
      // a's open window comes back to b after EVENTS_ACK_WAIT_MS.
      await waitFor(async () => (await idCounts(out)).size >= total, {
        timeoutMs: 120_000,
        message: `all ${total} events in files`,
      });

      // A clean stop gives the lease back: a third replica waiting for it need not wait for it to run out.
      c = startBatcher(env("c", portC));
      await c.waitForLog(isWaiting, 60_000, "c waits for the lease");
      // Redeliveries of anything b acknowledged late come within one ack wait: give them that long.
      await new Promise((r) => setTimeout(r, 6000));
      expect(await b.stop()).toBe(0);
      batchesPublished += published(b).filter((l) => l.duplicate !== true).length;
      const kv = await new Kvm(pub.nc).open("FILES_leases");
      const entry = await kv.get("batcher.EVENTS.batcher");
      const heldBy = entry?.operation === "PUT" ? (JSON.parse(entry.string()) as { holder: string }).holder : undefined;
      expect(heldBy, "b's lease is gone once b has stopped").not.toBe(holdingB.holder);
      await c.waitForLog((l) => l.msg === HOLDING, 30_000, "c takes over");
      expect(published(c)).toEqual([]);
      expect(await c.stop()).toBe(0);
    } finally {
      await a.kill();
      await b.kill();
      await c?.kill();
    }

    await waitFor(() => outcomeLines(producer).length >= batchesPublished, {
      timeoutMs: 30_000,
      message: "every published batch written",
    });
    const counts = await idCounts(out);
    expect(counts.size).toBe(total);
    const twice = [...counts].filter(([, n]) => n !== 1);
    expect(twice, "events in more than one file").toEqual([]);
  });

  it("a holder paused past its lease (SIGSTOP) publishes nothing more once resumed and exits with LEASE_LOST; every event lands once", async () => {
    await using nats = await startNats();
    const out = join(root, "out");
    const env = (name: string) =>
      batcherEnv(nats.url, join(root, `spool-${name}`), {
        BATCH_FORMAT: "jsonl",
        ROTATION_INTERVAL_MS: "1000",
        ROTATION_CHECK_MS: "100",
        EVENTS_ACK_WAIT_MS: "5000",
        BATCH_LEASE_MS: "3000",
      });
    await using producer = startBatchProducer(nats.url, out);
    await using pub = await eventPublisher(nats.url);
    await using a = startBatcher(env("a"));
    await a.waitForLog((l) => l.msg === "batcher started", 60_000);
    await using b = startBatcher(env("b"));
    await b.waitForLog(isWaiting, 60_000, "b waits for the lease");
    const events = (from: number, n: number) => Array.from({ length: n }, (_, i) => JSON.stringify({ id: from + i }));

    await pub.publishAll("events.pause", events(0, 500), 8);
    await waitFor(() => published(a).length >= 1, { timeoutMs: 60_000, message: "a publishes" });
    // An open window in a when it is paused: those events are a's until their ack wait runs out.
    await pub.publishAll("events.pause", events(500, 500), 8);
    process.kill(a.pid, "SIGSTOP");
    const before = published(a).length;
    let resumed = false;
    try {
      await b.waitForLog((l) => l.msg === HOLDING, 60_000, "b takes over from the paused holder");
      await pub.publishAll("events.pause", events(1000, 500), 8);
      process.kill(a.pid, "SIGCONT");
      resumed = true;
      expect(await a.exited(30_000)).toBe(1);
    } finally {
      if (!resumed) process.kill(a.pid, "SIGCONT");
    }
    expect(a.logs().some((l) => l.msg === "lost the lease of the batch group: stopping without publishing")).toBe(true);
    expect(a.stderr()).toContain("LEASE_LOST");
    expect(published(a).length, "a published nothing after it lost the lease").toBe(before);

    await waitFor(async () => (await idCounts(out)).size >= 1500, {
      timeoutMs: 120_000,
      message: "all 1500 events in files",
    });
    // Redeliveries of anything b acknowledged late come within one ack wait: give them that long.
    await new Promise((r) => setTimeout(r, 6000));
    expect(await b.stop()).toBe(0);
    const batches = [...published(a), ...published(b)].filter((l) => l.duplicate !== true).length;
    await waitFor(() => outcomeLines(producer).length >= batches, {
      timeoutMs: 30_000,
      message: "every published batch written",
    });
    const counts = await idCounts(out);
    expect(counts.size).toBe(1500);
    expect(
      [...counts].filter(([, n]) => n !== 1),
      "events in more than one file",
    ).toEqual([]);
  });
});

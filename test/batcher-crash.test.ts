import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  batcherEnv,
  eventPublisher,
  published,
  readOutputs,
  startBatcher,
  startBatchProducer,
} from "./batcher-support.js";
import { outcomeLines } from "./producer-support.js";
import { startNats, waitFor } from "./support/index.js";

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "batcher-crash-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Every id in every output file, with how often it appears. */
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

describe("batcher: crashes", () => {
  it("SIGKILLed twice mid-window with events still arriving: every event lands in exactly one file", async () => {
    await using nats = await startNats();
    const out = join(root, "out");
    const env = batcherEnv(nats.url, join(root, "spool"), {
      BATCH_FORMAT: "jsonl",
      ROTATION_INTERVAL_MS: "1500",
      ROTATION_CHECK_MS: "100",
      EVENTS_ACK_WAIT_MS: "5000",
    });
    await using producer = startBatchProducer(nats.url, out);
    await using pub = await eventPublisher(nats.url);
    const total = 4000;
    let sent = 0;
    let batcher = startBatcher(env);
    let batchesPublished = 0;
    // The batcher provisions the events stream: publish only once it exists.
    await batcher.waitForLog((l) => l.msg === "batcher started", 60_000);
    // A steady trickle (about 20 s: each restart first waits for the killed one's lease) so that every kill falls in an open window.
    const sending = (async () => {
      while (sent < total) {
        const n = Math.min(40, total - sent);
        const chunk = Array.from({ length: n }, (_, i) => JSON.stringify({ id: sent + i, at: Date.now() }));
        await pub.publishAll("events.crash", chunk, 8);
        sent += n;
        await new Promise((r) => setTimeout(r, 200));
      }
    })();

    try {
      for (let kill = 1; kill <= 2; kill++) {
        await batcher.waitForLog((l) => l.msg === "batcher started", 60_000);
        const seen = published(batcher).length;
        await waitFor(() => published(batcher).length > seen, { timeoutMs: 60_000, message: "a batch published" });
        // Mid-window: events keep arriving while the next window fills.
        const target = sent + 200;
        await waitFor(() => sent >= target || sent >= total, { timeoutMs: 60_000, message: "more events sent" });
        expect(sent, "the kill happens while events still arrive").toBeLessThan(total);
        await batcher.kill();
        batchesPublished += published(batcher).filter((l) => l.duplicate !== true).length;
        batcher = startBatcher(env);
      }
      await sending;
      await waitFor(async () => (await idCounts(out)).size >= total, {
        timeoutMs: 120_000,
        message: `all ${total} events in files`,
      });
      // Redeliveries of anything acknowledged late come within one ack wait: give them that long, then stop cleanly.
      await new Promise((r) => setTimeout(r, 7000));
      expect(await batcher.stop()).toBe(0);
      batchesPublished += published(batcher).filter((l) => l.duplicate !== true).length;
    } finally {
      await batcher.kill();
    }
    // The producer has written every batch the batcher published.
    await waitFor(() => outcomeLines(producer).length >= batchesPublished, {
      timeoutMs: 30_000,
      message: "every published batch written",
    });
    const counts = await idCounts(out);
    expect(counts.size).toBe(total);
    const twice = [...counts].filter(([, c]) => c !== 1);
    expect(twice, "events in more than one file").toEqual([]);
  });
});

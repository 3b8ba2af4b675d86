import { mkdtemp, rm } from "node:fs/promises";
import { connect } from "node:net";
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
import { freePort, startNats, waitFor } from "./support/index.js";

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "batcher-tcp-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

/** What `nc -N host port < file` does: send everything, half-close, read until the server closes. */
function sendLikeNc(port: number, data: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: "127.0.0.1", port, allowHalfOpen: true });
    let reply = "";
    socket.on("data", (d: Buffer) => (reply += d.toString("utf8")));
    socket.on("error", reject);
    socket.on("end", () => {
      socket.end();
      resolve(reply);
    });
    // Written in pieces that do not follow line boundaries.
    for (let i = 0; i < data.length; i += 4093) socket.write(data.subarray(i, i + 4093));
    socket.end();
  });
}

describe("batcher: TCP input", () => {
  it("10,000 lines over TCP give the same files as the same events over NATS; the sender learns they are stored", async () => {
    await using nats = await startNats();
    const out = join(root, "out");
    const port = await freePort();
    await using batcher = startBatcher(
      batcherEnv(nats.url, join(root, "spool"), {
        BATCH_FORMAT: "jsonl",
        BATCH_KEY: "2",
        TCP_PORT: String(port),
        TCP_HOST: "127.0.0.1",
        TCP_SUBJECT: "events.tcp",
        ROTATION_INTERVAL_MS: "5000",
        EVENTS_ACK_WAIT_MS: "90000",
        MAX_BATCH_BYTES: "256KiB",
      }),
    );
    await batcher.waitForLog((l) => l.msg === "batcher started");
    await using producer = startBatchProducer(nats.url, out);
    const lines = Array.from({ length: 10_000 }, (_, i) => JSON.stringify({ id: i, body: "é-".repeat(i % 40) }));

    const reply = await sendLikeNc(port, Buffer.from(`${lines.join("\r\n")}\n`));
    expect(reply.trimEnd().split("\n").at(-1)).toBe("ACK 10000");

    // One input after the other, so that each fills its own windows the same way.
    const ofKey = (key: string) => (name: string) => new RegExp(`_${key}(_\\d{3})?\\.`).test(name);
    const eventsOf = (key: string) =>
      published(batcher)
        .filter((l) => ofKey(key)(String(l.path)))
        .reduce((n, l) => n + Number(l.events), 0);
    await waitFor(() => eventsOf("tcp") === 10_000, { timeoutMs: 60_000, message: "the TCP events batched" });
    await using pub = await eventPublisher(nats.url);
    // In order (one connection, sent in sequence), as the TCP listener stored them.
    await pub.publishAll("events.nats", lines, 64);
    await waitFor(() => eventsOf("nats") === 10_000, { timeoutMs: 60_000, message: "the NATS events batched" });

    expect(await batcher.stop()).toBe(0);
    const batches = published(batcher);
    await waitFor(() => outcomeLines(producer).length >= batches.length, {
      timeoutMs: 60_000,
      message: `${batches.length} batches written`,
    });
    const files = await readOutputs(out);
    // Sorted by name is the order the batcher closed them (same-second batches are numbered _002, _003 …).
    const byKey = (key: string) =>
      files.filter((f) => ofKey(key)(f.name)).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const order = batches.map((l) => String(l.path));
    for (const key of ["tcp", "nats"]) {
      expect(byKey(key).map((f) => f.name)).toEqual(order.filter(ofKey(key)));
    }
    const tcpFiles = byKey("tcp");
    const natsFiles = byKey("nats");
    expect(tcpFiles.length).toBeGreaterThan(1);
    expect(natsFiles.map((f) => f.content)).toEqual(tcpFiles.map((f) => f.content));
    expect(Buffer.concat(tcpFiles.map((f) => f.content)).toString("utf8")).toBe(lines.map((l) => `${l}\n`).join(""));
  });

  it("refuses an event over TCP_MAX_EVENT_BYTES with ERR, after acknowledging what came before", async () => {
    await using nats = await startNats();
    const port = await freePort();
    await using batcher = startBatcher(
      batcherEnv(nats.url, join(root, "spool"), {
        BATCH_FORMAT: "raw",
        TCP_PORT: String(port),
        TCP_HOST: "127.0.0.1",
        TCP_MAX_EVENT_BYTES: "1KiB",
      }),
    );
    await batcher.waitForLog((l) => l.msg === "batcher started");
    const reply = await sendLikeNc(port, Buffer.from(`a\nb\n${"x".repeat(2000)}\nc\n`));
    expect(reply).toMatch(/(^|\n)ERR 2 event exceeds 1024 bytes\n$/);
  });
});

/**
 * The DLQ stream's limits (DLQ_MAX_AGE, default 30 days; DLQ_MAX_BYTES, unset
 * = none): set when the services create it, updated in place when they start
 * with other values, and never by purging what it holds. The SDK without
 * limits creates it with the default age and leaves an existing one as is.
 */
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { dlqSubject, provision, silentLogger } from "@filerelay/core";
import { startNats, startService } from "./support/index.js";
import { consumerReady, producerReady } from "./support/pipeline.js";

// Services run from packages/*/dist: `pnpm build` first (pnpm test does).

const NS_PER_MS = 1_000_000;
const DAY_MS = 86_400_000;

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "dlq-limits-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("DLQ stream limits", () => {
  it("are applied at start by the producer and the consumer, and updated in place on restart", async () => {
    await using nats = await startNats();
    const nc = await connect({ servers: nats.url });
    await using _nc = { [Symbol.asyncDispose]: () => nc.close() };
    const jsm = await jetstreamManager(nc);
    const dlq = async () => (await jsm.streams.info("FILES_DLQ")).config;
    const producerEnv = { NATS_URL: nats.url, OUTPUT_DIR: join(root, "out") };

    // Defaults: 30 days, no byte limit.
    {
      await using producer = startService("producer", producerEnv);
      await producerReady(producer);
      expect((await dlq()).max_age).toBe(30 * DAY_MS * NS_PER_MS);
      expect((await dlq()).max_bytes).toBe(-1);
      await producer.stop();
    }
    // A dead letter stored meanwhile must survive every change of limits.
    await jetstream(nc).publish(dlqSubject("file-producers"), "kept", { msgID: "kept-1" });

    {
      await using producer = startService("producer", { ...producerEnv, DLQ_MAX_AGE: "12h", DLQ_MAX_BYTES: "1MiB" });
      await producerReady(producer);
      expect((await dlq()).max_age).toBe(12 * 3_600_000 * NS_PER_MS);
      expect((await dlq()).max_bytes).toBe(1024 ** 2);
      expect(producer.logs().some((l) => /updated stream FILES_DLQ: max_age, max_bytes/.test(String(l.change)))).toBe(
        true,
      );
      await producer.stop();
    }

    // The consumer provisions too: its values apply when it starts; DLQ_MAX_BYTES unset lifts the byte limit.
    const input = join(root, "in");
    await mkdir(input);
    {
      await using consumer = startService("consumer", { NATS_URL: nats.url, INPUT_DIR: input, DLQ_MAX_AGE: "2d" });
      await consumerReady(consumer);
      expect((await dlq()).max_age).toBe(2 * DAY_MS * NS_PER_MS);
      expect((await dlq()).max_bytes).toBe(-1);
      await consumer.stop();
    }
    const state = (await jsm.streams.info("FILES_DLQ")).state;
    expect(state.messages).toBe(1);

    // The SDK without limits leaves an existing DLQ stream's limits alone.
    const before = await dlq();
    await provision(nc, { STREAM: "FILES", SUBJECT: "files.input", STREAM_REPLICAS: 1 }, { log: silentLogger() });
    expect((await dlq()).max_age).toBe(before.max_age);
  });
});

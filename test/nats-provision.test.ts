import { jetstreamManager, RetentionPolicy } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import {
  connectNats,
  provision,
  silentLogger,
  NatsError,
  jetstreamNames,
  type NatsConfig,
} from "@filerelay/core/internal";
import { startNats } from "./support/index.js";

const log = silentLogger();
const base = { STREAM: "FILES", SUBJECT: "files.input", STREAM_REPLICAS: 1 };
const natsConfig = (url: string, extra: Partial<NatsConfig> = {}): NatsConfig => ({ NATS_URL: [url], ...extra });

describe("connect + provision (real nats-server)", () => {
  it("creates streams, groups and buckets once; a second run changes nothing", async () => {
    await using nats = await startNats();
    const nc = await connectNats(natsConfig(nats.url), { name: "t", log });
    try {
      const first = await provision(nc, base, { log, groups: ["file-producers", "audit"], sourceBuckets: true });
      expect(first.changes.length).toBeGreaterThanOrEqual(7);
      const second = await provision(nc, base, { log, groups: ["file-producers", "audit"], sourceBuckets: true });
      expect(second.changes).toEqual([]);

      const jsm = await jetstreamManager(nc);
      const names = jetstreamNames(base);
      const files = await jsm.streams.info("FILES");
      expect(files.config.subjects).toEqual(["files.>"]);
      expect(files.config.retention).toBe(RetentionPolicy.Interest);
      const dlq = await jsm.streams.info("FILES_DLQ");
      expect(dlq.config.subjects).toEqual(["filerelay.dlq.>"]);
      expect(dlq.config.retention).toBe(RetentionPolicy.Limits);
      const group = await jsm.consumers.info("FILES", "file-producers");
      expect(group.config.filter_subject).toBe("files.input");
      expect(group.config.durable_name).toBe("file-producers");
      await jsm.consumers.info("FILES", "audit");
      await jsm.streams.info(`KV_${names.fingerprintBucket}`);
      await jsm.streams.info(`KV_${names.claimBucket}`);
      await jsm.streams.info(`OBJ_${names.payloadBucket}`);
    } finally {
      await nc.close();
    }
  });

  it("replicas that start together all provision, each on its own connection", async () => {
    await using nats = await startNats();
    const conns = await Promise.all(
      Array.from({ length: 16 }, (_, i) => connectNats(natsConfig(nats.url), { name: `r${i}`, log })),
    );
    try {
      const opts = { log, groups: ["file-producers"], sourceBuckets: true };
      const jsm = await jetstreamManager(conns[0]!);
      // The losing create is rare per start, so many starts, each on an empty server.
      for (let round = 0; round < 60; round++) {
        for await (const name of jsm.streams.names()) await jsm.streams.delete(name);
        const results = await Promise.all(conns.map((nc) => provision(nc, base, opts)));
        // An identical create is idempotent on the server, so more than one may report it.
        expect(results.some((r) => r.changes.some((c) => c.startsWith("created stream FILES ")))).toBe(true);
        expect((await jsm.streams.info("FILES")).config.subjects).toEqual(["files.>"]);
        expect((await jsm.streams.info("FILES_DLQ")).config.subjects).toEqual(["filerelay.dlq.>"]);
        await jsm.consumers.info("FILES", "file-producers");
      }
      expect((await provision(conns[0]!, base, opts)).changes).toEqual([]);
    } finally {
      await Promise.all(conns.map((nc) => nc.close()));
    }
  });

  it("a stream of another name already holding the subjects fails with an error that says so and what to do", async () => {
    await using nats = await startNats();
    const nc = await connectNats(natsConfig(nats.url), { name: "t", log });
    try {
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({ name: "LEGACY", subjects: ["files.>"] });
      const err = await provision(nc, base, { log }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(NatsError);
      expect((err as NatsError).code).toBe("PROVISION_FAILED");
      expect((err as NatsError).message).toMatch(
        /creating stream FILES \(files\.>\) still fails after 3 tries: subjects overlap.*another stream may already hold those subjects.*STREAM \/ SUBJECT/,
      );
      // Nothing of ours was half-made next to the operator's stream.
      await expect(jsm.streams.info("FILES")).rejects.toThrow();
    } finally {
      await nc.close();
    }
  });

  it("keeps messages and provisioning across a server restart", async () => {
    await using nats = await startNats();
    let nc = await connectNats(natsConfig(nats.url), { name: "t", log });
    await provision(nc, base, { log, groups: ["file-producers"] });
    const js = (await jetstreamManager(nc)).jetstream();
    await js.publish("files.input", "hello", { msgID: "m1" });
    await nc.close();

    await nats.restart();
    nc = await connectNats(natsConfig(nats.url), { name: "t", log });
    try {
      const again = await provision(nc, base, { log, groups: ["file-producers"] });
      expect(again.changes).toEqual([]);
      const jsm = await jetstreamManager(nc);
      expect((await jsm.streams.info("FILES")).state.messages).toBe(1);
      expect((await jsm.consumers.info("FILES", "file-producers")).num_pending).toBe(1);
    } finally {
      await nc.close();
    }
  });

  it("authenticates with user/password and with a token", async () => {
    {
      await using nats = await startNats({ user: "relay", password: "pw-123" });
      const nc = await connectNats(natsConfig(nats.url, { NATS_USER: "relay", NATS_PASSWORD: "pw-123" }), {
        name: "t",
        log,
      });
      await provision(nc, base, { log });
      await nc.close();
    }
    {
      await using nats = await startNats({ token: "tok-456" });
      const nc = await connectNats(natsConfig(nats.url, { NATS_TOKEN: "tok-456" }), { name: "t", log });
      await provision(nc, base, { log });
      await nc.close();
    }
  });

  it("a wrong password fails fast with a clear error naming the server, and no secret", async () => {
    await using nats = await startNats({ user: "relay", password: "right" });
    const err = await connectNats(natsConfig(nats.url, { NATS_USER: "relay", NATS_PASSWORD: "wrong-secret" }), {
      name: "t",
      log,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NatsError);
    expect((err as NatsError).code).toBe("NATS_AUTH_FAILED");
    expect((err as Error).message).toContain(nats.url);
    expect((err as Error).message).toContain("rejected our credentials");
    expect((err as Error).message).not.toContain("wrong-secret");
  });
});

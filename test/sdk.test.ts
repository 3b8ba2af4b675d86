import { createHash, randomBytes, randomUUID } from "node:crypto";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { headers as natsHeaders } from "@nats-io/nats-core";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import {
  consumeFiles,
  envelopeToHeaders,
  isVerifiedPayload,
  jetstreamNames,
  PermanentError,
  putPayloadObject,
  SinkError,
  silentLogger,
  type ConsumeFilesOptions,
  type Envelope,
  type FileContext,
  type FileOutcome,
} from "@filerelay/core/internal";
import { startNats, waitFor, type NatsServer } from "./support/index.js";

const log = silentLogger();
const GROUP = "sdk-test";

interface Published {
  envelope: Envelope;
  body: Buffer;
}

function inlineFile(body: Buffer = randomBytes(1000 + Math.floor(Math.random() * 5000))): Published {
  const id = randomUUID();
  return {
    body,
    envelope: {
      id,
      source: "sdk",
      type: "io.filerelay.file.v1",
      time: new Date(),
      subject: `in/${id}.bin`,
      contentType: "application/octet-stream",
      filename: `${id}.bin`,
      size: body.length,
      sha256: createHash("sha256").update(body).digest("hex"),
      mtime: new Date(),
      payload: { kind: "inline" },
    },
  };
}

async function publish(nc: NatsConnection, file: Published): Promise<void> {
  await jetstream(nc).publish("files.input", file.body, { headers: envelopeToHeaders(file.envelope) });
}

async function sha256Of(ctx: FileContext): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of ctx.open() as AsyncIterable<Buffer>) hash.update(chunk);
  return hash.digest("hex");
}

/** A running consumeFiles() with its outcomes, stopped on dispose. */
interface Running extends AsyncDisposable {
  outcomes: FileOutcome[];
  done: Promise<void>;
  stop(): Promise<void>;
  resolved(): boolean;
}

function run(
  nc: NatsConnection,
  handler: (ctx: FileContext) => Promise<void>,
  options: Partial<ConsumeFilesOptions> = {},
): Running {
  const ac = new AbortController();
  const outcomes: FileOutcome[] = [];
  let resolved = false;
  const done = consumeFiles(
    {
      nats: nc,
      group: GROUP,
      log,
      signal: ac.signal,
      backoffMs: 100,
      fetchExpiresMs: 1000,
      ...options,
      onOutcome: (o) => {
        outcomes.push(o);
        options.onOutcome?.(o);
      },
    },
    handler,
  ).finally(() => {
    resolved = true;
  });
  const stop = async () => {
    ac.abort(new Error("test done"));
    await done;
  };
  return { outcomes, done, stop, resolved: () => resolved, [Symbol.asyncDispose]: stop };
}

async function connectTo(nats: NatsServer): Promise<NatsConnection> {
  return connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 200 });
}

/** Every message stored in the DLQ stream so far. */
async function dlqMessages(
  nc: NatsConnection,
): Promise<{ subject: string; headers: Record<string, string>; data: Uint8Array }[]> {
  const jsm = await jetstreamManager(nc);
  const out = [];
  const si = await jsm.streams.info("FILES_DLQ").catch(() => null);
  // An empty stream reports first_seq 0, which is not a valid sequence to get.
  for (
    let seq = Math.max(1, si?.state.first_seq ?? 1);
    si && si.state.messages > 0 && seq <= si.state.last_seq;
    seq++
  ) {
    const m = await jsm.streams.getMessage("FILES_DLQ", { seq });
    if (!m) continue;
    const headers: Record<string, string> = {};
    for (const [k, v] of m.header) headers[k] = v[0] ?? "";
    out.push({ subject: m.subject, headers, data: m.data });
  }
  return out;
}

async function groupState(nc: NatsConnection) {
  const jsm = await jetstreamManager(nc);
  const ci = await jsm.consumers.info("FILES", GROUP);
  const si = await jsm.streams.info("FILES");
  return { pending: ci.num_pending, ackPending: ci.num_ack_pending, streamMessages: si.state.messages };
}

describe("consumeFiles() SDK (real nats-server)", () => {
  it("provisions the group, acks on success, and each file's payload verifies", async () => {
    await using nats = await startNats();
    const nc = await connectTo(nats);
    const seen = new Map<string, string>();
    const files = Array.from({ length: 5 }, () => inlineFile());
    {
      await using r = run(nc, async (ctx) => {
        seen.set(ctx.envelope.id, await sha256Of(ctx));
        expect(ctx.deliveryCount).toBe(1);
        expect(ctx.headers["ce-id"]).toBe(ctx.envelope.id);
      });
      // The group durable exists before anything is published (nothing is lost).
      await waitFor(async () => (await jetstreamManager(nc)).consumers.info("FILES", GROUP), {
        message: "group durable",
      });
      for (const f of files) await publish(nc, f);
      await waitFor(() => r.outcomes.filter((o) => o.outcome === "acked").length === 5, { message: "5 acks" });
      expect(r.outcomes.every((o) => o.outcome === "acked" && o.bytes === o.envelope?.size)).toBe(true);
    }
    for (const f of files) expect(seen.get(f.envelope.id)).toBe(f.envelope.sha256);
    // Interest retention: acked by the only group → gone from the stream.
    expect(await groupState(nc)).toEqual({ pending: 0, ackPending: 0, streamMessages: 0 });
    await nc.close();
  });

  it("naks with growing delay and succeeds on the 3rd delivery", async () => {
    await using nats = await startNats();
    const nc = await connectTo(nats);
    const deliveries: { count: number; at: number }[] = [];
    await using r = run(
      nc,
      async (ctx) => {
        deliveries.push({ count: ctx.deliveryCount, at: Date.now() });
        await sha256Of(ctx);
        if (ctx.deliveryCount < 3) throw new Error(`transient failure #${ctx.deliveryCount}`);
      },
      { backoffMs: 300 },
    );
    await waitFor(async () => (await jetstreamManager(nc)).consumers.info("FILES", GROUP));
    await publish(nc, inlineFile());
    await waitFor(() => r.outcomes.some((o) => o.outcome === "acked"), { message: "eventual ack" });
    expect(deliveries.map((d) => d.count)).toEqual([1, 2, 3]);
    expect(r.outcomes.map((o) => [o.outcome, o.deliveryCount, o.delayMs])).toEqual([
      ["retry", 1, 300],
      ["retry", 2, 600],
      ["acked", 3, undefined],
    ]);
    expect(r.outcomes[0]?.code).toBe("HANDLER_FAILED");
    expect(r.outcomes[0]?.error).toContain("transient failure #1");
    const gap1 = deliveries[1]!.at - deliveries[0]!.at;
    const gap2 = deliveries[2]!.at - deliveries[1]!.at;
    expect(gap1).toBeGreaterThanOrEqual(280);
    expect(gap2).toBeGreaterThanOrEqual(580);
    expect(gap2).toBeGreaterThan(gap1);
    await r.stop();
    await nc.close();
  });

  it("a PermanentError dead-letters at once: DLQ message with headers and body, error dir copy, original termed", async () => {
    await using nats = await startNats();
    const nc = await connectTo(nats);
    const errorDir = await mkdtemp(join(tmpdir(), "sdk-dlq-"));
    try {
      let calls = 0;
      const file = inlineFile(Buffer.from("a,b\n1,2\n"));
      await using r = run(
        nc,
        () => {
          calls++;
          return Promise.reject(new PermanentError("schema v3 is not supported"));
        },
        { errorDir },
      );
      await waitFor(async () => (await jetstreamManager(nc)).consumers.info("FILES", GROUP));
      await publish(nc, file);
      await waitFor(() => r.outcomes.length === 1, { message: "one outcome" });
      expect(r.outcomes[0]).toMatchObject({ outcome: "dead-lettered", code: "HANDLER_PERMANENT", deliveryCount: 1 });
      expect(calls).toBe(1);

      const dlq = await dlqMessages(nc);
      expect(dlq).toHaveLength(1);
      const d = dlq[0]!;
      expect(d.subject).toBe(`filerelay.dlq.${GROUP}`);
      expect(Buffer.from(d.data).equals(file.body)).toBe(true);
      expect(d.headers["filerelay-error"]).toContain("schema v3 is not supported");
      expect(d.headers["filerelay-error-code"]).toBe("HANDLER_PERMANENT");
      expect(d.headers["filerelay-deliveries"]).toBe("1");
      expect(d.headers["filerelay-group"]).toBe(GROUP);
      expect(d.headers["ce-id"]).toBe(file.envelope.id);
      expect(d.headers["ce-sha256"]).toBe(file.envelope.sha256);

      const day = new Date().toISOString().slice(0, 10);
      expect((await readdir(join(errorDir, day))).sort()).toEqual(
        [`${file.envelope.id}.envelope.json`, `${file.envelope.id}.payload`].sort(),
      );
      const doc = JSON.parse(await readFile(join(errorDir, day, `${file.envelope.id}.envelope.json`), "utf8")) as {
        code: string;
        headers: Record<string, string>;
      };
      expect(doc.code).toBe("HANDLER_PERMANENT");
      expect(doc.headers["ce-filename"]).toBe(file.envelope.filename);
      expect((await readFile(join(errorDir, day, `${file.envelope.id}.payload`))).equals(file.body)).toBe(true);
      await waitFor(async () => (await groupState(nc)).streamMessages === 0, { message: "termed message gone" });
      await r.stop();
    } finally {
      await rm(errorDir, { recursive: true, force: true });
      await nc.close();
    }
  });

  it("after maxDeliver transient failures the file is dead-lettered with MAX_DELIVER_EXCEEDED", async () => {
    await using nats = await startNats();
    const nc = await connectTo(nats);
    let calls = 0;
    await using r = run(
      nc,
      () => {
        calls++;
        return Promise.reject(new Error("upstream flaky"));
      },
      { maxDeliver: 3, backoffMs: 50 },
    );
    await waitFor(async () => (await jetstreamManager(nc)).consumers.info("FILES", GROUP));
    const file = inlineFile();
    await publish(nc, file);
    await waitFor(() => r.outcomes.some((o) => o.outcome === "dead-lettered"), { message: "dead letter" });
    expect(calls).toBe(3);
    expect(r.outcomes.map((o) => o.outcome)).toEqual(["retry", "retry", "dead-lettered"]);
    const [d] = await dlqMessages(nc);
    expect(d?.headers["filerelay-error-code"]).toBe("MAX_DELIVER_EXCEEDED");
    expect(d?.headers["filerelay-deliveries"]).toBe("3");
    expect(d?.headers["filerelay-error"]).toContain("upstream flaky");
    expect(d?.headers["ce-id"]).toBe(file.envelope.id);
    await r.stop();
    await nc.close();
  });

  it("an outage of the sink (environmental code) is retried past maxDeliver, then the file lands", async () => {
    await using nats = await startNats();
    const nc = await connectTo(nats);
    let calls = 0;
    await using r = run(
      nc,
      async (ctx) => {
        calls++;
        if (calls <= 5) throw new SinkError("DISK_SPACE_LOW", "need 2 MB free on /out, have 1 MB");
        await sha256Of(ctx);
      },
      { maxDeliver: 2, backoffMs: 20 },
    );
    await waitFor(async () => (await jetstreamManager(nc)).consumers.info("FILES", GROUP));
    await publish(nc, inlineFile());
    await waitFor(() => r.outcomes.some((o) => o.outcome === "acked"), { message: "the file to be acked" });
    expect(calls).toBe(6);
    expect(r.outcomes.map((o) => o.outcome)).toEqual(["retry", "retry", "retry", "retry", "retry", "acked"]);
    expect(r.outcomes.slice(0, 5).every((o) => o.code === "DISK_SPACE_LOW")).toBe(true);
    expect(await dlqMessages(nc)).toEqual([]);
    await r.stop();
    await nc.close();
  });

  it("invalid envelopes are dead-lettered at once with distinct codes; valid ones keep flowing", async () => {
    await using nats = await startNats();
    const nc = await connectTo(nats);
    const handled: string[] = [];
    await using r = run(nc, async (ctx) => {
      await sha256Of(ctx);
      handled.push(ctx.envelope.id);
    });
    await waitFor(async () => (await jetstreamManager(nc)).consumers.info("FILES", GROUP));
    const js = jetstream(nc);

    const missing = natsHeaders();
    missing.set("ce-id", randomUUID());
    missing.set("ce-specversion", "1.0");
    await js.publish("files.input", "hello", { headers: missing });

    const good = inlineFile();
    const sizeLie = inlineFile();
    await js.publish("files.input", sizeLie.body.subarray(1), { headers: envelopeToHeaders(sizeLie.envelope) });
    await publish(nc, good);
    const traversal = inlineFile();
    const th = envelopeToHeaders({ ...traversal.envelope, subject: "../../etc/passwd", filename: "passwd" });
    await js.publish("files.input", traversal.body, { headers: th });

    await waitFor(() => r.outcomes.length === 4, { message: "4 outcomes" });
    expect(handled).toEqual([good.envelope.id]);
    const dlq = await dlqMessages(nc);
    expect(dlq.map((d) => d.headers["filerelay-error-code"])).toEqual([
      "ENVELOPE_INVALID",
      "ENVELOPE_SIZE_MISMATCH",
      "PATH_UNSAFE",
    ]);
    expect(dlq.every((d) => d.headers["filerelay-deliveries"] === "1")).toBe(true);
    expect(dlq[0]?.headers["filerelay-error"]).toContain("ce-sha256: missing");
    await r.stop();
    await nc.close();
  });

  it("two SDK consumers in one group each handle a disjoint share", async () => {
    await using nats = await startNats();
    const nc1 = await connectTo(nats);
    const nc2 = await connectTo(nats);
    const byMember: [string[], string[]] = [[], []];
    const handler = (i: 0 | 1) => async (ctx: FileContext) => {
      await sha256Of(ctx);
      // A little work so both members get a share.
      await new Promise((res) => setImmediate(res));
      byMember[i].push(ctx.envelope.id);
    };
    const files = Array.from({ length: 60 }, () => inlineFile());
    {
      await using a = run(nc1, handler(0), { concurrency: 2 });
      await using b = run(nc2, handler(1), { concurrency: 2 });
      await waitFor(async () => (await jetstreamManager(nc1)).consumers.info("FILES", GROUP));
      for (const f of files) await publish(nc1, f);
      await waitFor(() => a.outcomes.length + b.outcomes.length === 60, { message: "60 outcomes" });
    }
    const all = [...byMember[0], ...byMember[1]];
    expect(all.sort()).toEqual(files.map((f) => f.envelope.id).sort());
    expect(new Set(all).size).toBe(60);
    expect(byMember[0].length).toBeGreaterThan(0);
    expect(byMember[1].length).toBeGreaterThan(0);
    await nc1.close();
    await nc2.close();
  });

  it("never pulls more than it can run", async () => {
    await using nats = await startNats();
    const nc = await connectTo(nats);
    let release!: () => void;
    const gate = new Promise<void>((res) => {
      release = res;
    });
    let running = 0;
    let maxRunning = 0;
    await using r = run(
      nc,
      async () => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        await gate;
        running--;
      },
      { concurrency: 3 },
    );
    await waitFor(async () => (await jetstreamManager(nc)).consumers.info("FILES", GROUP));
    for (let i = 0; i < 10; i++) await publish(nc, inlineFile());
    await waitFor(() => running === 3, { message: "3 running" });
    // Delivered-but-unacked is exactly what runs: nothing waits in a client buffer.
    const state = await groupState(nc);
    expect(state.ackPending).toBe(3);
    expect(state.pending).toBe(7);
    release();
    await waitFor(() => r.outcomes.length === 10, { message: "10 outcomes" });
    expect(maxRunning).toBe(3);
    await r.stop();
    await nc.close();
  });

  it("objectConcurrency bounds Object Store payload handlers while inline files keep flowing", async () => {
    await using nats = await startNats();
    const nc = await connectTo(nats);
    let release!: () => void;
    const gate = new Promise<void>((res) => {
      release = res;
    });
    let objects = 0;
    let maxObjects = 0;
    await using r = run(
      nc,
      async (ctx) => {
        if (ctx.envelope.payload.kind === "object") {
          objects++;
          maxObjects = Math.max(maxObjects, objects);
          await gate;
          expect(await sha256Of(ctx)).toBe(ctx.envelope.sha256);
          objects--;
        } else {
          expect(await sha256Of(ctx)).toBe(ctx.envelope.sha256);
        }
      },
      { concurrency: 4, objectConcurrency: 1 },
    );
    await waitFor(async () => (await jetstreamManager(nc)).consumers.info("FILES", GROUP));
    const { payloadBucket } = jetstreamNames({ STREAM: "FILES", SUBJECT: "files.input" });
    for (let i = 0; i < 2; i++) {
      const file = inlineFile(randomBytes(300_000));
      const put = await putPayloadObject(nc, {
        bucket: payloadBucket,
        name: file.envelope.id,
        source: Readable.from([file.body]),
      });
      expect(put.sha256).toBe(file.envelope.sha256);
      file.envelope.payload = { kind: "object", bucket: payloadBucket, name: file.envelope.id };
      await publish(nc, { envelope: file.envelope, body: Buffer.alloc(0) });
    }
    for (let i = 0; i < 3; i++) await publish(nc, inlineFile());
    // The inline files are handled while one object handler holds the only object turn.
    await waitFor(() => r.outcomes.filter((o) => o.outcome === "acked").length === 3, { message: "3 inline acked" });
    expect(objects).toBe(1);
    release();
    await waitFor(() => r.outcomes.length === 5, { message: "5 outcomes" });
    expect(r.outcomes.every((o) => o.outcome === "acked")).toBe(true);
    expect(maxObjects).toBe(1);
    await r.stop();
    await nc.close();
  });

  it("hands an object payload over as the verifying stream itself while the status ledger counts its progress", async () => {
    await using nats = await startNats();
    const nc = await connectTo(nats);
    const seen: { verified: boolean; sha256: string }[] = [];
    // The ledger is on by default: progress is reported while the handler reads.
    await using r = run(nc, async (ctx) => {
      const stream = ctx.open();
      const verified = isVerifiedPayload(stream, ctx.envelope);
      const hash = createHash("sha256");
      for await (const chunk of stream as AsyncIterable<Buffer>) hash.update(chunk);
      seen.push({ verified, sha256: hash.digest("hex") });
    });
    await waitFor(async () => (await jetstreamManager(nc)).consumers.info("FILES", GROUP));
    const { payloadBucket } = jetstreamNames({ STREAM: "FILES", SUBJECT: "files.input" });
    const file = inlineFile(randomBytes(700_000));
    await putPayloadObject(nc, { bucket: payloadBucket, name: file.envelope.id, source: Readable.from([file.body]) });
    file.envelope.payload = { kind: "object", bucket: payloadBucket, name: file.envelope.id };
    await publish(nc, { envelope: file.envelope, body: Buffer.alloc(0) });
    await waitFor(() => r.outcomes.length === 1, { message: "one outcome" });
    expect(r.outcomes[0]?.outcome).toBe("acked");
    // Verified: a sink writing exactly these chunks need not hash them again.
    expect(seen).toEqual([{ verified: true, sha256: file.envelope.sha256 }]);
    await r.stop();
    await nc.close();
  });

  it("keeps long handlers alive with working(): no redelivery past ack_wait", async () => {
    await using nats = await startNats();
    const nc = await connectTo(nats);
    const calls: number[] = [];
    await using r = run(
      nc,
      async (ctx) => {
        calls.push(ctx.deliveryCount);
        const until = Date.now() + 3500;
        // A long write: the SDK's timer keeps the message alive; ctx.working() is throttled.
        await waitFor(
          () => {
            ctx.working();
            return Date.now() > until;
          },
          { intervalMs: 100 },
        );
      },
      { ackWaitMs: 1200 },
    );
    await waitFor(async () => (await jetstreamManager(nc)).consumers.info("FILES", GROUP));
    await publish(nc, inlineFile());
    await waitFor(() => r.outcomes.length === 1, { message: "one outcome", timeoutMs: 15_000 });
    expect(calls).toEqual([1]);
    expect(r.outcomes[0]).toMatchObject({ outcome: "acked", deliveryCount: 1 });
    await r.stop();
    await nc.close();
  });

  it("survives a broker restart mid-run: every file is handled", async () => {
    await using nats = await startNats();
    const nc = await connectTo(nats);
    const acked = new Set<string>();
    await using r = run(
      nc,
      async (ctx) => {
        await sha256Of(ctx);
        await new Promise((res) => setTimeout(res, 20)); // simulated sink work, not synchronization
      },
      {
        concurrency: 2,
        onOutcome: (o) => {
          if (o.outcome === "acked" && o.envelope) acked.add(o.envelope.id);
        },
      },
    );
    await waitFor(async () => (await jetstreamManager(nc)).consumers.info("FILES", GROUP));
    const before = Array.from({ length: 30 }, () => inlineFile());
    for (const f of before) await publish(nc, f);
    await waitFor(() => acked.size >= 5, { message: "some progress" });
    await nats.restart();
    const after = Array.from({ length: 10 }, () => inlineFile());
    await waitFor(
      async () => {
        for (const f of after) await publish(nc, f);
        return true;
      },
      { timeoutMs: 30_000, message: "publishing after restart" },
    );
    const all = [...before, ...after].map((f) => f.envelope.id);
    await waitFor(() => all.every((id) => acked.has(id)), { timeoutMs: 60_000, message: "all 40 acked" });
    await r.stop();
    await nc.close();
  });

  it("abort drains in-flight handlers, then resolves; past the deadline it naks and aborts ctx.signal", async () => {
    await using nats = await startNats();
    const nc = await connectTo(nats);
    let release!: () => void;
    const gate = new Promise<void>((res) => {
      release = res;
    });
    let started = 0;
    const r = run(
      nc,
      async () => {
        started++;
        await gate;
      },
      { concurrency: 2 },
    );
    await waitFor(async () => (await jetstreamManager(nc)).consumers.info("FILES", GROUP));
    await publish(nc, inlineFile());
    await publish(nc, inlineFile());
    await waitFor(() => started === 2, { message: "2 in flight" });
    const stopping = r.stop();
    // Still draining while handlers run.
    await new Promise((res) => setImmediate(res));
    expect(r.resolved()).toBe(false);
    release();
    await stopping;
    expect(r.outcomes.map((o) => o.outcome)).toEqual(["acked", "acked"]);

    // A handler that never finishes: handed back at the deadline, and redelivered later.
    const stuck = inlineFile();
    let sawAbort = false;
    const r2 = run(
      nc,
      (ctx) =>
        new Promise<void>((_, reject) => {
          ctx.signal.addEventListener("abort", () => {
            sawAbort = true;
            reject(new Error("aborted by drain"));
          });
        }),
      { drainTimeoutMs: 300 },
    );
    await publish(nc, stuck);
    await waitFor(async () => (await groupState(nc)).ackPending === 1, { message: "stuck in flight" });
    await r2.stop();
    expect(sawAbort).toBe(true);
    expect(r2.outcomes).toEqual([expect.objectContaining({ outcome: "retry", code: "SHUTDOWN" })]);
    const redelivered: string[] = [];
    await using r3 = run(nc, (ctx) => {
      redelivered.push(ctx.envelope.id);
      return Promise.resolve();
    });
    await waitFor(() => r3.outcomes.length === 1, { message: "redelivery" });
    // (2.9.10 reports this redelivery's count as 1: the nak'd message first went to the
    // stopped member's expired pull, which the server rolls back.)
    expect(redelivered).toEqual([stuck.envelope.id]);
    expect(r3.outcomes[0]?.outcome).toBe("acked");
    await r3.stop();
    await nc.close();
  });
});

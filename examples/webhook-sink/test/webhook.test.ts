import { createHash, randomBytes, randomUUID } from "node:crypto";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import { fileURLToPath } from "node:url";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import { consumeFiles, envelopeToHeaders, silentLogger, type Envelope, type FileOutcome } from "@filerelay/core";
import { consumerEnv, consumerStarted, makeConsumerDirs, writeRel } from "../../../test/consumer-support.js";
import { freePort, startNats, startNodeProcess, startService, waitFor } from "../../../test/support/index.js";
import { createWebhookHandler } from "../src/webhook.js";

const entry = fileURLToPath(new URL("../dist/main.js", import.meta.url));
const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

interface Received {
  headers: IncomingHttpHeaders;
  id: string;
  size: number;
  sha256: string;
  status: number;
  /** False when the client broke the request off before its end. */
  complete: boolean;
}

/**
 * A real webhook receiver: each file (by ce-id) is answered 503 `failFirst`
 * times, then 200; a file named *reject* gets 400. Every request's body is
 * hashed as it streams in.
 */
async function startReceiver(opts: { failFirst?: number; port?: number } = {}) {
  const requests: Received[] = [];
  const attempts = new Map<string, number>();
  const server: Server = createServer((req, res) => {
    const hash = createHash("sha256");
    let size = 0;
    let ended = false;
    const id = String(req.headers["ce-id"]);
    req.on("data", (c: Buffer) => {
      hash.update(c);
      size += c.length;
    });
    req.on("end", () => {
      ended = true;
      const n = (attempts.get(id) ?? 0) + 1;
      attempts.set(id, n);
      const status = String(req.headers["ce-filename"]).includes("reject")
        ? 400
        : n <= (opts.failFirst ?? 2)
          ? 503
          : 200;
      requests.push({ headers: req.headers, id, size, sha256: hash.digest("hex"), status, complete: true });
      res.writeHead(status, { "content-type": "text/plain" }).end(status === 200 ? "ok" : "nope");
    });
    req.on("close", () => {
      if (!ended) requests.push({ headers: req.headers, id, size, sha256: "", status: 0, complete: false });
    });
  });
  await new Promise<void>((resolve) => server.listen(opts.port ?? 0, "127.0.0.1", resolve));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    requests,
    delivered: (id: string) => requests.filter((r) => r.id === id && r.status === 200),
    [Symbol.asyncDispose]: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** The built example (dist/main.js) as a process, with its JSON log lines. */
function startWebhookSink(env: Record<string, string>) {
  return startNodeProcess("webhook-sink", entry, { LOG_LEVEL: "info", ...env });
}

async function dlq(nc: NatsConnection) {
  const jsm = await jetstreamManager(nc);
  const si = await jsm.streams.info("FILES_DLQ").catch(() => null);
  const out: Record<string, string>[] = [];
  for (
    let seq = Math.max(1, si?.state.first_seq ?? 1);
    si && si.state.messages > 0 && seq <= si.state.last_seq;
    seq++
  ) {
    const m = await jsm.streams.getMessage("FILES_DLQ", { seq });
    if (!m) continue;
    const h: Record<string, string> = {};
    for (const [k, v] of m.header) h[k] = v[0] ?? "";
    out.push(h);
  }
  return out;
}

describe("examples/webhook-sink", () => {
  it("POSTs each file once complete, with CloudEvents headers, after two 503s (inline and object payloads)", async () => {
    await using nats = await startNats();
    await using receiver = await startReceiver({ failFirst: 2 });
    await using dirs = await makeConsumerDirs("webhook-it-");
    // The consumer provisions the webhook group (SINK_GROUPS): nothing published before the sink starts is lost.
    await using consumer = startService(
      "consumer",
      consumerEnv(nats.url, dirs, { SOURCE: "api", SINK_GROUPS: "webhook", LOG_LEVEL: "info" }),
    );
    await consumerStarted(consumer);
    const small = Buffer.concat([Buffer.from("id,name\n1,é\n"), randomBytes(10_000)]);
    const big = randomBytes(700_000 + 123); // > INLINE_MAX_BYTES: travels through the Object Store
    await writeRel(dirs.input, "reports/q1 résumé.csv", small);
    await writeRel(dirs.input, "big.bin", big);
    await consumer.waitForLog((l) => l.msg === "file published" && l.path === "big.bin");
    await consumer.waitForLog((l) => l.msg === "file published" && l.path === "reports/q1 résumé.csv");

    await using sink = startWebhookSink({ NATS_URL: nats.url, WEBHOOK_URL: receiver.url, RETRY_BACKOFF_MS: "100" });
    await waitFor(() => receiver.requests.filter((r) => r.status === 200).length >= 2, {
      timeoutMs: 30_000,
      message: `both files delivered (requests so far: ${receiver.requests.length}; ${sink.stderr()})`,
    });
    await waitFor(() => sink.logs().filter((l) => l.msg === "file handled").length === 2, {
      message: "both files acked",
    });

    const expected = [
      { body: small, subject: "reports/q1 résumé.csv", filename: "q1 résumé.csv", type: "text/csv" },
      { body: big, subject: "big.bin", filename: "big.bin", type: "application/octet-stream" },
    ];
    const ids = new Set<string>();
    for (const f of expected) {
      const ok = receiver.requests.filter((r) => r.status === 200 && r.sha256 === sha256(f.body));
      expect(ok).toHaveLength(1);
      const r = ok[0]!;
      ids.add(r.id);
      // Two 503s before: three complete attempts in all, each carrying the whole file.
      const attempts = receiver.requests.filter((x) => x.id === r.id);
      expect(attempts.map((x) => x.status)).toEqual([503, 503, 200]);
      expect(attempts.every((x) => x.complete && x.size === f.body.length && x.sha256 === sha256(f.body))).toBe(true);
      expect(r.size).toBe(f.body.length);
      const h = r.headers;
      expect(h["ce-specversion"]).toBe("1.0");
      expect(h["ce-id"]).toMatch(/^[0-9a-f-]{36}$/);
      expect(h["ce-source"]).toBe("api");
      expect(h["ce-type"]).toBe("io.filerelay.file.v1");
      expect(Date.parse(String(h["ce-time"]))).not.toBeNaN();
      expect(h["content-type"]).toBe(f.type);
      // CloudEvents HTTP binding: space, '%', '"' and non-ASCII are percent-encoded (UTF-8).
      expect(decodeURIComponent(String(h["ce-subject"]))).toBe(f.subject);
      expect(decodeURIComponent(String(h["ce-filename"]))).toBe(f.filename);
      expect(String(h["ce-subject"])).toMatch(/^[\x21-\x7e]+$/);
      expect(h["ce-filesize"]).toBe(String(f.body.length));
      expect(h["ce-sha256"]).toBe(sha256(f.body));
    }
    expect(h0(receiver.requests.find((r) => r.sha256 === sha256(small))?.headers["ce-subject"])).toBe(
      "reports/q1%20r%C3%A9sum%C3%A9.csv",
    );
    expect(ids.size).toBe(2);
    expect(receiver.requests).toHaveLength(6);

    // Acked: the interest-retention stream no longer holds the envelopes, nothing was dead-lettered.
    const nc = await connect({ servers: nats.url });
    try {
      const jsm = await jetstreamManager(nc);
      await waitFor(async () => (await jsm.streams.info("FILES")).state.messages === 0, {
        message: "FILES empty after the acks",
      });
      const ci = await jsm.consumers.info("FILES", "webhook");
      expect(ci.num_ack_pending).toBe(0);
      expect(await dlq(nc)).toEqual([]);
    } finally {
      await nc.close();
    }
    expect(await sink.stop()).toBe(0);
  });

  it("runs in-process: a receiver outage is retried, 4xx and a corrupt payload are dead-lettered", async () => {
    await using nats = await startNats();
    const port = await freePort();
    const nc = await connect({ servers: nats.url });
    const ac = new AbortController();
    const outcomes: FileOutcome[] = [];
    const done = consumeFiles(
      {
        nats: nc,
        group: "webhook-it",
        signal: ac.signal,
        backoffMs: 100,
        fetchExpiresMs: 1000,
        log: silentLogger(),
        onOutcome: (o) => outcomes.push(o),
      },
      createWebhookHandler(`http://127.0.0.1:${port}/hook`),
    );
    try {
      // consumeFiles() provisions the stream and its durable itself.
      await waitFor(async () => (await jetstreamManager(nc)).consumers.info("FILES", "webhook-it"), {
        message: "group durable",
      });
      const publish = async (name: string, body: Buffer, over: Partial<Envelope> = {}) => {
        const env: Envelope = {
          id: randomUUID(),
          source: "it",
          type: "io.filerelay.file.v1",
          time: new Date(),
          subject: name,
          contentType: "text/plain",
          filename: name,
          size: body.length,
          sha256: sha256(body),
          mtime: new Date(),
          payload: { kind: "inline" },
          ...over,
        };
        await jetstream(nc).publish("files.input", body, { headers: envelopeToHeaders(env) });
        return env;
      };
      const good = await publish("hello.txt", Buffer.from("hello webhook"));
      // Nobody listens on the port yet: a network error is an outage, retried (not dead-lettered).
      await waitFor(() => outcomes.filter((o) => o.envelope?.id === good.id).length >= 2, {
        message: "two failed attempts while the receiver is down",
      });
      expect(outcomes.map((o) => [o.outcome, o.code])).toEqual(outcomes.map(() => ["retry", "SINK_UNAVAILABLE"]));
      await using receiver = await startReceiver({ failFirst: 0, port });
      await waitFor(() => receiver.delivered(good.id).length === 1, {
        message: "hello.txt delivered after the outage",
      });
      expect(receiver.delivered(good.id)[0]!.sha256).toBe(good.sha256);

      const rejected = await publish("reject-me.txt", Buffer.from("the receiver refuses this"));
      const corrupt = await publish("corrupt.txt", Buffer.from("bytes that do not match"), {
        sha256: sha256(Buffer.from("other bytes")),
      });
      await waitFor(async () => (await dlq(nc)).length === 2, { message: "two dead letters" });
      const dead = await dlq(nc);
      const byId = new Map(dead.map((h) => [h["ce-id"], h]));
      expect(byId.get(rejected.id)?.["filerelay-error-code"]).toBe("HANDLER_PERMANENT");
      expect(byId.get(rejected.id)?.["filerelay-error"]).toContain("400");
      expect(byId.get(corrupt.id)?.["filerelay-error-code"]).toBe("PAYLOAD_DIGEST_MISMATCH");
      // 4xx: one attempt only. Corrupt payload: the receiver never got a complete request.
      expect(receiver.requests.filter((r) => r.id === rejected.id)).toHaveLength(1);
      expect(receiver.requests.filter((r) => r.id === corrupt.id && r.complete)).toEqual([]);
      expect(receiver.delivered(good.id)).toHaveLength(1);
      expect(outcomes.filter((o) => o.outcome === "acked").map((o) => o.envelope?.id)).toEqual([good.id]);
    } finally {
      ac.abort();
      await done;
      await nc.close();
    }
  });

  it("exits 78 naming WEBHOOK_URL when it is missing", async () => {
    await using sink = startWebhookSink({ GROUP: "bad group" });
    expect(await sink.exited(15_000)).toBe(78);
    expect(sink.stderr()).toContain("WEBHOOK_URL: required");
    expect(sink.stderr()).toContain("GROUP:");
  });
});

function h0(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

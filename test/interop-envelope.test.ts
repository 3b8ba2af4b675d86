/**
 * Interop proof (issue 7): a third party needs only a plain NATS client and
 * docs/envelope.md. Nothing here calls @filerelay/core: envelopes are read
 * and written with @nats-io/* alone, headers spelled out literally, and the
 * object payload read step by step as the document describes.
 */
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type JsMsg } from "@nats-io/jetstream";
import { headers as natsHeaders } from "@nats-io/nats-core";
import { Objm } from "@nats-io/obj";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { startNats, startService, waitFor } from "./support/index.js";

const sha256Hex = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const base64url = (b: Buffer) => b.toString("base64").replace(/\+/g, "-").replace(/\//g, "_");

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "interop-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

function headerRecord(m: JsMsg): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of m.headers ?? []) out[k] = v[0] ?? "";
  return out;
}

interface ObjectMeta {
  name: string;
  bucket: string;
  nuid: string;
  size: number;
  chunks: number;
  digest: string;
  mtime: string;
  deleted?: boolean;
  options?: { max_chunk_size?: number };
}

/**
 * docs/envelope.md "Payloads", step 1: the last message on
 * `$O.<bucket>.M.<base64url(name)>` in stream `OBJ_<bucket>`, fetched with a
 * raw direct-get request `{"last_by_subj": …}`. Null when the object is gone.
 */
async function readObjectMeta(nc: NatsConnection, bucket: string, name: string): Promise<ObjectMeta | null> {
  const metaSubject = `$O.${bucket}.M.${base64url(Buffer.from(name, "utf8"))}`;
  const reply = await nc.request(`$JS.API.DIRECT.GET.OBJ_${bucket}`, JSON.stringify({ last_by_subj: metaSubject }), {
    timeout: 5000,
  });
  // A miss is a status-only reply (404) without a body.
  if (reply.headers?.code === 404 || reply.data.length === 0) return null;
  expect(reply.headers?.get("Nats-Subject")).toBe(metaSubject);
  const meta = JSON.parse(new TextDecoder().decode(reply.data)) as ObjectMeta;
  return meta.deleted ? null : meta;
}

/**
 * Step 2 + 3: every message on `$O.<bucket>.C.<nuid>` in order (an ordered
 * consumer filtered to that subject, deliver all), hashed as it streams;
 * verifies size and SHA-256 against the envelope and the meta digest.
 */
async function readObjectChunks(
  nc: NatsConnection,
  bucket: string,
  meta: ObjectMeta,
  expected: { size: number; sha256: string },
): Promise<Buffer> {
  const parts: Buffer[] = [];
  const hash = createHash("sha256");
  let size = 0;
  if (meta.size > 0) {
    const js = jetstream(nc);
    // One subject as a string: nats.js sends it as filter_subject (an array becomes
    // filter_subjects, which nats-server 2.9 does not know).
    const oc = await js.consumers.get(`OBJ_${bucket}`, {
      filter_subjects: `$O.${bucket}.C.${meta.nuid}`,
      deliver_policy: DeliverPolicy.All,
    });
    const messages = await oc.consume();
    for await (const m of messages) {
      hash.update(m.data);
      size += m.data.length;
      parts.push(Buffer.from(m.data));
      if (m.info.pending === 0) break;
    }
  }
  expect(size).toBe(expected.size);
  expect(size).toBe(meta.size);
  const digest = hash.digest();
  expect(digest.toString("hex")).toBe(expected.sha256);
  // The meta digest is the same hash, as "SHA-256=" + base64url.
  expect(meta.digest.replace(/=+$/, "")).toBe(`SHA-256=${base64url(digest).replace(/=+$/, "")}`);
  return Buffer.concat(parts);
}

describe("interop: envelopes with a plain NATS client and docs/envelope.md", () => {
  it("reads an inline and an object envelope published by the real consumer", async () => {
    await using nats = await startNats();
    const input = join(root, "in");
    await mkdir(join(input, "orders"), { recursive: true });
    await using consumer = startService("consumer", {
      NATS_URL: nats.url,
      INPUT_DIR: input,
      SOURCE: "api",
      STABILITY_MS: "200",
      POLL_INTERVAL_MS: "250",
      LOG_LEVEL: "info",
    });
    await consumer.waitForLog((l) => l.msg === "consumer started");

    const nc = await connect({ servers: nats.url });
    try {
      const jsm = await jetstreamManager(nc);
      // "A sink is a durable pull consumer on the stream, filtered to the subject."
      await jsm.consumers.add("FILES", {
        durable_name: "my-sink",
        filter_subject: "files.input",
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        max_deliver: -1,
      });

      const small = Buffer.concat([Buffer.from("id,total\n17,42.50\n"), randomBytes(2000)]);
      const big = randomBytes(1024 * 1024 + 4321); // > 256 KiB: an Object Store payload, 17 chunks
      await writeFile(join(input, "orders", "order 17.csv"), small);
      await writeFile(join(input, "big.bin"), big);

      const consumerApi = await jetstream(nc).consumers.get("FILES", "my-sink");
      const got: { headers: Record<string, string>; bytes: Buffer }[] = [];
      await waitFor(
        async () => {
          const batch = await consumerApi.fetch({ max_messages: 2 - got.length, expires: 1000 });
          for await (const m of batch) {
            const h = headerRecord(m);
            let bytes: Buffer;
            if (h["ce-payload"] === "inline") {
              bytes = Buffer.from(m.data);
              expect(bytes.length).toBe(Number(h["ce-filesize"]));
              expect(sha256Hex(bytes)).toBe(h["ce-sha256"]);
            } else {
              const ref = /^object:([A-Za-z0-9_-]+)\/(.+)$/.exec(h["ce-payload"] ?? "");
              expect(ref).not.toBeNull();
              const [, bucket, name] = ref!;
              expect(m.data.length).toBe(0);
              const meta = await readObjectMeta(nc, bucket!, name!);
              expect(meta).not.toBeNull();
              expect(meta).toMatchObject({ name, bucket, size: Number(h["ce-filesize"]) });
              expect(meta!.chunks).toBeGreaterThan(1);
              expect(meta!.options?.max_chunk_size).toBeGreaterThan(0);
              expect(Number.isNaN(Date.parse(meta!.mtime))).toBe(false);
              bytes = await readObjectChunks(nc, bucket!, meta!, {
                size: Number(h["ce-filesize"]),
                sha256: h["ce-sha256"]!,
              });
              // The doc's shortcut: the nats.js Object Store API reads the same object.
              const result = await (await new Objm(nc).open(bucket!)).get(name!);
              const viaObjm = Buffer.from(await new Response(result?.data).arrayBuffer());
              expect(sha256Hex(viaObjm)).toBe(h["ce-sha256"]);
            }
            got.push({ headers: h, bytes });
            m.ack();
          }
          return got.length === 2;
        },
        { timeoutMs: 30_000, message: "two envelopes fetched from my-sink" },
      );

      const bySubject = new Map(got.map((g) => [g.headers["ce-subject"], g]));
      const inline = bySubject.get("orders/order 17.csv");
      const object = bySubject.get("big.bin");
      expect(inline?.bytes.equals(small)).toBe(true);
      expect(object?.bytes.equals(big)).toBe(true);
      // Every documented header, with the documented form.
      for (const g of got) {
        const h = g.headers;
        expect(h["Nats-Msg-Id"]).toBe(h["ce-id"]);
        expect(h["ce-specversion"]).toBe("1.0");
        expect(h["ce-id"]).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
        expect(h["ce-source"]).toBe("api");
        expect(h["ce-type"]).toBe("io.filerelay.file.v1");
        expect(h["ce-time"]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
        expect(h["ce-mtime"]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
        expect(h["ce-filename"]).toBe(h["ce-subject"]!.split("/").pop());
        expect(h["ce-filesize"]).toBe(String(g.bytes.length));
        expect(h["ce-sha256"]).toMatch(/^[0-9a-f]{64}$/);
      }
      expect(inline?.headers["content-type"]).toBe("text/csv");
      expect(inline?.headers["ce-payload"]).toBe("inline");
      expect(object?.headers["content-type"]).toBe("application/octet-stream");
      expect(object?.headers["ce-payload"]).toBe(`object:FILES_payloads/${object?.headers["ce-id"]}`);
      // Acked: nothing left for my-sink.
      await waitFor(async () => (await jsm.consumers.info("FILES", "my-sink")).num_ack_pending === 0, {
        message: "acks to land",
      });
      // A name that is no object reads as missing (the documented PAYLOAD_MISSING case).
      expect(await readObjectMeta(nc, "FILES_payloads", "no-such-object")).toBeNull();
    } finally {
      await nc.close();
    }
  });

  it("meta subjects use padded base64url, as the nats.js Object Store writes them", async () => {
    await using nats = await startNats();
    const nc = await connect({ servers: nats.url });
    try {
      const os = await new Objm(nc).create("interop");
      const content = randomBytes(300_000);
      // 10 bytes of name: base64 needs padding ("cmVwb3J0LmNzdg==").
      await os.putBlob({ name: "report.csv" }, content);
      const meta = await readObjectMeta(nc, "interop", "report.csv");
      expect(meta).toMatchObject({ name: "report.csv", bucket: "interop", size: content.length });
      const bytes = await readObjectChunks(nc, "interop", meta!, { size: content.length, sha256: sha256Hex(content) });
      expect(bytes.equals(content)).toBe(true);
    } finally {
      await nc.close();
    }
  });

  it("an envelope published by hand (literal headers, plain client) is written by the built-in producer", async () => {
    await using nats = await startNats();
    const out = join(root, "out");
    await using producer = startService("producer", {
      NATS_URL: nats.url,
      OUTPUT_DIR: out,
      ORGANIZE_BY: "none",
      RETRY_BACKOFF_MS: "100",
      SHUTDOWN_TIMEOUT_MS: "5000",
      LOG_LEVEL: "info",
    });
    await producer.waitForLog((l) => l.msg === "consuming files");

    const nc = await connect({ servers: nats.url });
    try {
      // Binary content with bytes that are not valid UTF-8: the body must arrive exactly.
      const body = Buffer.concat([Buffer.from([0x00, 0xff, 0xfe, 0x0a, 0x0d]), randomBytes(5000)]);
      const id = randomUUID();
      const h = natsHeaders();
      h.set("Nats-Msg-Id", id);
      h.set("ce-specversion", "1.0");
      h.set("ce-id", id);
      h.set("ce-source", "manual");
      h.set("ce-type", "io.filerelay.file.v1");
      h.set("ce-time", "2026-11-23T10:00:02.512Z");
      h.set("ce-subject", "hand/made.dat");
      h.set("content-type", "application/octet-stream");
      h.set("ce-filename", "made.dat");
      h.set("ce-filesize", String(body.length));
      h.set("ce-sha256", sha256Hex(body));
      h.set("ce-mtime", "2026-11-23T10:00:00Z");
      h.set("ce-payload", "inline");
      const ack = await jetstream(nc).publish("files.input", body, { headers: h });
      expect(ack.stream).toBe("FILES");

      // An object payload written with the nats.js Object Store API into the deployment's bucket.
      const big = randomBytes(400_000);
      const objectId = randomUUID();
      const os = await new Objm(nc).open("FILES_payloads");
      await os.putBlob({ name: objectId }, big);
      const h2 = natsHeaders();
      for (const [k, v] of h) if (v[0] !== undefined) h2.set(k, v[0]);
      h2.set("Nats-Msg-Id", objectId);
      h2.set("ce-id", objectId);
      h2.set("ce-subject", "hand/big.dat");
      h2.set("ce-filename", "big.dat");
      h2.set("ce-filesize", String(big.length));
      h2.set("ce-sha256", sha256Hex(big));
      h2.set("ce-payload", `object:FILES_payloads/${objectId}`);
      await jetstream(nc).publish("files.input", new Uint8Array(0), { headers: h2 });

      await waitFor(() => producer.logs().filter((l) => l.msg === "file written").length === 2, {
        timeoutMs: 30_000,
        message: `the producer to write both files (${producer.stderr()})`,
      });
      // Default FILENAME_TEMPLATE {{.Name}}-{{.ShortID}}{{.Ext}}, ORGANIZE_BY=none.
      const short = (uuid: string) => uuid.replace(/-/g, "").slice(0, 8);
      expect((await readdir(out)).sort()).toEqual([`made-${short(id)}.dat`, `big-${short(objectId)}.dat`].sort());
      expect((await readFile(join(out, `made-${short(id)}.dat`))).equals(body)).toBe(true);
      expect((await readFile(join(out, `big-${short(objectId)}.dat`))).equals(big)).toBe(true);
      expect(producer.logs().filter((l) => l.msg === "file dead-lettered")).toEqual([]);
    } finally {
      await nc.close();
    }
  });
});

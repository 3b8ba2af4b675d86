/**
 * Dead letters that could not be stored. An invalid envelope whose header
 * block is near JetStream's 64 KiB limit, one whose body is near the server's
 * max_payload, and one carrying a JetStream publish directive that only holds
 * for the original stream (Nats-Expected-Stream) could not be published to the
 * DLQ stream as they were plus the filerelay-* headers: the dead letter failed,
 * the message was nak'd and redelivered forever. Each must be dead-lettered
 * once, trimmed to fit and marked so (filerelay-truncated), with the full
 * original kept in ERROR_DIR; nothing stays pending in the group.
 */
import { randomUUID } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { headers as natsHeaders } from "@nats-io/nats-core";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { connect } from "@nats-io/transport-node";
import { deadLetter, DLQ_HEADERS, envelopeToRecord, provision, silentLogger } from "@filerelay/core/internal";
import { startNats, startService, waitFor } from "./support/index.js";
import { createPublisher, readDeadLetters, testFile, type TestFile } from "./producer-support.js";
import { producerReady } from "./support/pipeline.js";

// Services run from packages/*/dist: `pnpm build` first (pnpm test does).

const MAX_PAYLOAD = 128 * 1024;

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "dlq-fit-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Size of the header block nats.js sends for `record`. */
function headerBytes(record: Record<string, string>): number {
  const h = natsHeaders();
  for (const [k, v] of Object.entries(record)) h.set(k, v);
  return (h as unknown as { encode(): Uint8Array }).encode().length;
}

describe("dead letters that cannot be stored as they are", () => {
  it("are trimmed to fit, marked, dead-lettered once, with the full original in ERROR_DIR", async () => {
    await using nats = await startNats({ config: `max_payload: ${MAX_PAYLOAD}\n` });
    await using pub = await createPublisher(nats.url);
    const errorDir = join(root, "errors");
    await using producer = startService("producer", {
      NATS_URL: nats.url,
      OUTPUT_DIR: join(root, "out"),
      ERROR_DIR: errorDir,
      RETRY_BACKOFF_MS: "100",
      MAX_DELIVER: "3",
      ACK_WAIT_MS: "5000",
    });
    await producerReady(producer);

    // 1. Headers padded to just under 64 KiB (JetStream's limit); invalid: negative size.
    const padded = testFile("fit/padded.txt", "padded headers\n");
    const pad: Record<string, string> = {};
    const base = { ...envelopeToRecord(padded.envelope), "ce-filesize": "-1", "Nats-Msg-Id": randomUUID() };
    for (let i = 0; headerBytes({ ...base, ...pad }) < 65_535 - 4200; i++) pad[`X-Pad-${i}`] = "p".repeat(4000);
    const last = 65_535 - headerBytes({ ...base, ...pad, "X-Pad-Last": "" });
    pad["X-Pad-Last"] = "q".repeat(last);
    expect(headerBytes({ ...base, ...pad })).toBe(65_535);
    await pub.publishRaw(padded, { "ce-filesize": "-1", ...pad });

    // 2. A body near max_payload; invalid: ce-filesize says one byte more.
    const bigBody = testFile("fit/big-body.bin", Buffer.alloc(1));
    const bigHeaders = { ...envelopeToRecord(bigBody.envelope), "Nats-Msg-Id": randomUUID(), "ce-filesize": "999999" };
    const body = Buffer.alloc(MAX_PAYLOAD - headerBytes(bigHeaders) - 8, 0x62);
    await pub.publishRaw(bigBody, { "ce-filesize": String(body.length + 1) }, body);

    // 3. A directive that held for FILES but would make the DLQ stream refuse the copy.
    const directive = testFile("fit/directive.txt", "expected stream\n");
    await pub.publishRaw(directive, { "ce-filesize": "-1", "Nats-Expected-Stream": "FILES" });

    const cases: [string, TestFile][] = [
      ["padded", padded],
      ["big body", bigBody],
      ["directive", directive],
    ];
    const dead = await waitFor(
      async () => {
        const d = await readDeadLetters(pub.nc, "file-producers");
        return d.length >= cases.length ? d : undefined;
      },
      { timeoutMs: 20_000, message: "three dead letters" },
    ).catch((err: unknown) => {
      console.log(producer.logs().filter((l) => l.outcome === "retry"));
      throw err;
    });
    // Nothing left in the group: neither pending nor waiting for an ack.
    const jsm = await jetstreamManager(pub.nc);
    const group = await waitFor(
      async () => {
        const info = await jsm.consumers.info("FILES", "file-producers");
        return info.num_pending === 0 && info.num_ack_pending === 0 ? info : undefined;
      },
      { timeoutMs: 10_000, message: "the group to have nothing pending" },
    );
    expect(group.num_redelivered).toBe(0);
    expect(dead).toHaveLength(cases.length);

    const byName = Object.fromEntries(
      cases.map(([name, f]) => [name, dead.find((d) => d.headers["ce-id"] === f.envelope.id)]),
    );
    const padLetter = byName.padded!;
    expect(padLetter.code).toBe("ENVELOPE_INVALID");
    expect(padLetter.deliveries).toBe(1);
    expect(padLetter.headers[DLQ_HEADERS.truncated]).toBe("headers");
    expect(padLetter.headers[DLQ_HEADERS.originalHeaderBytes]).toBeDefined();
    // The key envelope headers are kept whole.
    for (const k of ["ce-id", "ce-source", "ce-subject", "ce-payload", "ce-sha256"]) {
      expect(padLetter.headers[k], k).toBe(envelopeToRecord(padded.envelope)[k as "ce-id"]);
    }
    expect(Buffer.from(padLetter.body).toString()).toBe("padded headers\n");

    const bodyLetter = byName["big body"]!;
    expect(bodyLetter.code).toBe("ENVELOPE_SIZE_MISMATCH");
    expect(bodyLetter.deliveries).toBe(1);
    expect(bodyLetter.headers[DLQ_HEADERS.truncated]).toBe("body");
    expect(bodyLetter.headers[DLQ_HEADERS.originalBodyBytes]).toBe(String(body.length));
    expect(bodyLetter.body.length).toBe(0);

    const directiveLetter = byName.directive!;
    expect(directiveLetter.code).toBe("ENVELOPE_INVALID");
    expect(directiveLetter.headers["Nats-Expected-Stream"]).toBeUndefined();
    expect(directiveLetter.headers[DLQ_HEADERS.truncated]).toBe("headers");

    // ERROR_DIR holds the full originals: every header, and the body.
    const day = join(errorDir, new Date().toISOString().slice(0, 10));
    const doc = JSON.parse(await readFile(join(day, `${padded.envelope.id}.envelope.json`), "utf8")) as {
      headers: Record<string, string>;
      dlqTruncated?: string[];
    };
    for (const [k, v] of Object.entries(pad)) expect(doc.headers[k], k).toBe(v);
    expect(doc.dlqTruncated).toEqual(["headers"]);
    expect(await readFile(join(day, `${bigBody.envelope.id}.payload`))).toEqual(body);
    const directiveDoc = JSON.parse(await readFile(join(day, `${directive.envelope.id}.envelope.json`), "utf8")) as {
      headers: Record<string, string>;
    };
    expect(directiveDoc.headers["Nats-Expected-Stream"]).toBe("FILES");
    // Retried never: one dead letter, no retry line.
    expect(producer.logs().filter((l) => l.outcome === "retry")).toEqual([]);
  });

  it("skips the ERROR_DIR payload copy when the disk is short of space, but still dead-letters and writes the record", async () => {
    await using nats = await startNats();
    const nc = await connect({ servers: nats.url });
    await using _nc = { [Symbol.asyncDispose]: () => nc.close() };
    const log = silentLogger();
    await provision(nc, { STREAM: "FILES", SUBJECT: "files.input", STREAM_REPLICAS: 1 }, { log });
    const errorDir = join(root, "errors");
    const file = testFile("space/a.bin", Buffer.alloc(900 * 1024, 7));
    const letter = (freeSpace: () => Promise<{ free: number; total: number }>, seq: number) =>
      deadLetter(nc, {
        group: "g",
        headers: envelopeToRecord(file.envelope),
        body: file.content,
        code: "ENVELOPE_INVALID",
        error: "test",
        deliveries: 1,
        msgId: `g:${seq}`,
        streamSeq: seq,
        errorDir,
        freeSpace,
        log,
      });
    // 100 MiB free of 10 GiB: under 5 % headroom, so the 900 KB payload is not copied.
    const short = await letter(() => Promise.resolve({ free: 100 * 1024 ** 2, total: 10 * 1024 ** 3 }), 1);
    expect(short.duplicate).toBe(false);
    expect(short.files.map((f) => f.split("/").pop())).toEqual([`${file.envelope.id}.envelope.json`]);
    const doc = JSON.parse(await readFile(short.files[0]!, "utf8")) as {
      payloadFile: unknown;
      payloadNotCopied: string;
    };
    expect(doc.payloadFile).toBeNull();
    expect(doc.payloadNotCopied).toMatch(/free space/);
    // Plenty of room: both files.
    const roomy = await letter(() => Promise.resolve({ free: 9 * 1024 ** 3, total: 10 * 1024 ** 3 }), 2);
    expect(roomy.files.map((f) => f.split("/").pop())).toEqual([
      `${file.envelope.id}.payload`,
      `${file.envelope.id}.envelope.json`,
    ]);
    // statfs itself failing never fails the dead letter.
    const broken = await letter(() => Promise.reject(new Error("statfs failed")), 3);
    expect(broken.seq).toBeGreaterThan(roomy.seq);
    expect(broken.files.map((f) => f.split("/").pop())).toEqual([`${file.envelope.id}.envelope.json`]);
  });
});

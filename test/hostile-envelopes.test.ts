/**
 * Hostile envelopes at the producer (issue 9 item 5, extending the list in
 * producer-fs.test.ts): header injection with CR/LF (sent as raw HPUB frames,
 * since nats.js refuses such values), 64 KiB header values, negative and huge
 * ce-filesize, ce-payload naming another bucket or a missing object, and
 * template expansions that produce `..`. Each hostile envelope is
 * dead-lettered with its code (or, for `..` produced from sanitized values,
 * written under a sanitized name inside OUTPUT_DIR); valid envelopes
 * interleaved between them are all written; nothing lands outside OUTPUT_DIR,
 * nor outside S3_PREFIX for a second group with SINK=s3.
 */
import { randomUUID } from "node:crypto";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Objm } from "@nats-io/obj";
import { envelopeToRecord } from "@filerelay/core";
import { startNats, startS3, startService, waitFor, type RunningService } from "./support/index.js";
import { createPublisher, readDeadLetters, sha256, testFile, type TestFile } from "./producer-support.js";
import { producerReady, treeHashes } from "./support/pipeline.js";

// Services run from packages/*/dist: `pnpm build` first (pnpm test does).

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "hostile-env-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

/**
 * Publishes one message as a raw HPUB frame, with header bytes exactly as
 * given: what a hostile client that does not validate values can send.
 */
async function rawPublish(port: number, subject: string, headerBlock: string, body: Buffer): Promise<void> {
  const hdr = Buffer.from(headerBlock, "utf8");
  await new Promise<void>((resolve, reject) => {
    const sock = tcpConnect(port, "127.0.0.1");
    let buffered = "";
    let sent = false;
    sock.on("error", reject);
    sock.on("data", (chunk: Buffer) => {
      buffered += chunk.toString("latin1");
      if (!sent && buffered.includes("INFO ") && buffered.includes("\r\n")) {
        sent = true;
        sock.write('CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\n');
        sock.write(`HPUB ${subject} ${hdr.length} ${hdr.length + body.length}\r\n`);
        sock.write(Buffer.concat([hdr, body, Buffer.from("\r\n")]));
        sock.write("PING\r\n");
      }
      if (buffered.includes("-ERR")) reject(new Error(`server refused the frame: ${buffered}`));
      if (sent && buffered.includes("PONG")) {
        sock.end();
        resolve();
      }
    });
  });
}

/** The header block of a valid envelope for `file`, with `extraLines` spliced in verbatim. */
function headerBlock(file: TestFile, over: Record<string, string> = {}): string {
  const record: Record<string, string> = { ...envelopeToRecord(file.envelope), "Nats-Msg-Id": randomUUID(), ...over };
  return `NATS/1.0\r\n${Object.entries(record)
    .map(([k, v]) => `${k}: ${v}`)
    .join("\r\n")}\r\n\r\n`;
}

interface Hostile {
  name: string;
  file: TestFile;
  /** Expected filerelay-error-code, or "sanitized" for a file written under a safe name. */
  expected: string;
}

describe("hostile envelopes at the producer", () => {
  it("dead-letters each with its code, writes nothing outside OUTPUT_DIR or S3_PREFIX, keeps writing valid ones", async () => {
    const t0 = Date.now();
    await using nats = await startNats();
    await using s3 = await startS3();
    await using pub = await createPublisher(nats.url);
    const out = join(root, "out");
    // `..` from values: {{.Source}}{{.Source}} with ce-source "." renders "..", which must never be used as is.
    const template = "{{.Source}}{{.Source}}/{{.RelDir}}/{{.Name}}{{.Ext}}";
    const common = {
      NATS_URL: nats.url,
      ORGANIZE_BY: "none",
      FILENAME_TEMPLATE: template,
      RETRY_BACKOFF_MS: "100",
      MAX_DELIVER: "3",
      ACK_WAIT_MS: "5000",
    };
    const fsProducer = startService("producer", { ...common, OUTPUT_DIR: out });
    const s3Producer = startService("producer", {
      ...common,
      PRODUCER_GROUP: "s3-sink",
      SINK: "s3",
      ...s3.env(),
      S3_PREFIX: "relay/",
    });
    await using _p = fsProducer;
    await using _s = s3Producer;
    await Promise.all([producerReady(fsProducer), producerReady(s3Producer)]);
    const passwdBefore = await stat("/etc/passwd");

    // A real object in our bucket (for a valid object envelope and a lying ce-filesize), and a
    // bucket this deployment does not own holding an object with matching bytes.
    const objm = new Objm(pub.nc);
    const own = await objm.open("FILES_payloads");
    const foreign = await objm.create("secrets");
    const objBytes = Buffer.from(`object payload ${randomUUID()}\n`.repeat(100));
    const objName = randomUUID();
    await own.put({ name: objName }, toStream(objBytes));
    await foreign.put({ name: "loot" }, toStream(objBytes));

    const valid: TestFile[] = [];
    const publishValid = async () => {
      const f = testFile(`ok/file-${valid.length}.txt`, `valid ${valid.length} ${randomUUID()}\n`);
      valid.push(f);
      await pub.publish(f);
    };
    const hostile: Hostile[] = [];
    const add = async (h: Hostile, send: () => Promise<void>) => {
      hostile.push(h);
      await send();
      await publishValid();
    };
    const viaClient =
      (f: TestFile, over: Record<string, string | null> = {}, body?: Buffer) =>
      () =>
        pub.publishRaw(f, over, body);

    await publishValid();

    // --- header injection with CR/LF (raw frames) -----------------------------------------
    // (CRLF that smuggles a second copy of an envelope header: see the known-gap test below.)
    // (Bare CR or LF inside a header value: see the known-gap test below.)

    // --- 64 KiB header values ---------------------------------------------------------------
    // JetStream itself refuses a header block over 64 KiB: such an envelope never reaches a sink.
    const h0 = testFile("big/refused.txt", "refused\n");
    await expect(pub.publishRaw(h0, { "ce-source": "A".repeat(64 * 1024) })).rejects.toThrow(/header size exceeds/);
    // Just under the limit: delivered, and must be refused by validation.
    const big = "A".repeat(60 * 1024);
    const h1 = testFile("big/source.txt", "big source\n");
    await add(
      { name: "60 KiB ce-source", file: h1, expected: "ENVELOPE_INVALID" },
      viaClient(h1, { "ce-source": big }),
    );
    // ce-subject repeats ce-filename: 2 × 30 KiB.
    const h2 = testFile(`big/${big.slice(0, 30 * 1024)}.txt`, "big name\n");
    await add({ name: "30 KiB ce-subject + ce-filename", file: h2, expected: "ENVELOPE_INVALID" }, viaClient(h2));
    const h4 = testFile("big/id.txt", "big id\n");
    await add({ name: "60 KiB ce-id", file: h4, expected: "ENVELOPE_INVALID" }, viaClient(h4, { "ce-id": big }));

    // --- ce-filesize negative or huge ------------------------------------------------------------
    const s1 = testFile("size/neg.txt", "negative\n");
    await add(
      { name: "ce-filesize -1", file: s1, expected: "ENVELOPE_INVALID" },
      viaClient(s1, { "ce-filesize": "-1" }),
    );
    const s2 = testFile("size/huge.txt", "huge\n");
    await add(
      { name: "ce-filesize 10^20", file: s2, expected: "ENVELOPE_INVALID" },
      viaClient(s2, { "ce-filesize": "100000000000000000000" }),
    );
    const s3f = testFile("size/unsafe.txt", "unsafe\n");
    await add(
      { name: "ce-filesize 2^53+1", file: s3f, expected: "ENVELOPE_INVALID" },
      viaClient(s3f, { "ce-filesize": "9007199254740993" }),
    );
    const s4 = testFile("size/tib.txt", "one tebibyte, inline\n");
    await add(
      { name: "ce-filesize 1 TiB with a small inline body", file: s4, expected: "ENVELOPE_SIZE_MISMATCH" },
      viaClient(s4, { "ce-filesize": String(1024 ** 4) }),
    );
    // (1 TiB naming a small object: see the known-gap test below.)

    // --- ce-payload elsewhere ------------------------------------------------------------------
    const p1 = testFile("payload/foreign.bin", objBytes, {
      payload: { kind: "object", bucket: "secrets", name: "loot" },
    });
    await add(
      { name: "ce-payload in another bucket", file: p1, expected: "PAYLOAD_FOREIGN_BUCKET" },
      viaClient(p1, {}, Buffer.alloc(0)),
    );
    const p2 = testFile("payload/missing.bin", objBytes, {
      payload: { kind: "object", bucket: "FILES_payloads", name: randomUUID() },
    });
    await add(
      { name: "ce-payload names a missing object", file: p2, expected: "PAYLOAD_MISSING" },
      viaClient(p2, {}, Buffer.alloc(0)),
    );

    // --- template expansions producing `..` ---------------------------------------------------------
    const t1 = testFile("dots.txt", "source dot dot\n", { source: "." });
    await add({ name: "{{.Source}}{{.Source}} = ..", file: t1, expected: "sanitized" }, viaClient(t1));
    const t2 = testFile("sub/...", "name dot dot\n");
    await add({ name: "{{.Name}}{{.Ext}} of '...'", file: t2, expected: "sanitized" }, viaClient(t2));

    // A valid object-payload envelope is still written (after all of the above).
    const objOk = testFile("ok/object.bin", objBytes, {
      payload: { kind: "object", bucket: "FILES_payloads", name: objName },
    });
    await pub.publish({ ...objOk, content: Buffer.alloc(0) });

    const dlqExpected = hostile.filter((h) => h.expected !== "sanitized");
    const sanitized = hostile.filter((h) => h.expected === "sanitized");
    const writtenExpected = valid.length + sanitized.length + 1;
    const groups = ["file-producers", "s3-sink"] as const;
    const dead = Object.fromEntries(
      await Promise.all(
        groups.map(
          async (g) =>
            [
              g,
              await waitFor(
                async () => {
                  const d = await readDeadLetters(pub.nc, g);
                  return d.length >= dlqExpected.length ? d : undefined;
                },
                { timeoutMs: 30_000, message: `${dlqExpected.length} dead letters of ${g}` },
              ).catch(async (err: unknown) => {
                const d = await readDeadLetters(pub.nc, g);
                const svc = g === "s3-sink" ? s3Producer : fsProducer;
                console.log(
                  g,
                  d.map((x) => [x.headers["ce-subject"]?.slice(0, 40), x.code]),
                  svc
                    .logs()
                    .filter((l) => l.outcome)
                    .map((l) => [l.msg, l.location, l.code, JSON.stringify(l.reason ?? l.err ?? "").slice(0, 200)]),
                );
                throw err;
              }),
            ] as const,
        ),
      ),
    );
    await Promise.all([fsProducer, s3Producer].map((svc) => waitWrites(svc, writtenExpected)));

    const codes: Record<string, Record<string, string | undefined>> = {};
    for (const g of groups) {
      const d = dead[g]!;
      expect(d, g).toHaveLength(dlqExpected.length);
      for (const h of dlqExpected) {
        // By ce-id, or by ce-subject where ce-id is the hostile value.
        const letter = d.find(
          (x) => x.headers["ce-id"] === h.file.envelope.id || x.headers["ce-subject"] === h.file.envelope.subject,
        );
        (codes[h.name] ??= {})[g] = letter?.code;
      }
    }
    const expectedCodes = Object.fromEntries(
      dlqExpected.map((h) => [h.name, Object.fromEntries(groups.map((g) => [g, h.expected]))]),
    );
    expect(codes).toEqual(expectedCodes);
    for (const g of groups) for (const d of dead[g]!) expect(d.deliveries, d.code).toBe(1);

    // fs: exactly the valid files and the sanitized ones, right bytes, nothing else under the test root.
    const tree = await treeHashes(out);
    const expectedTree = [
      ...valid.map((f) => ({ rel: `apiapi/${f.envelope.subject}`, sha256: f.envelope.sha256, size: f.envelope.size })),
      { rel: "apiapi/ok/object.bin", sha256: sha256(objBytes), size: objBytes.length },
      { rel: "_/dots.txt", sha256: t1.envelope.sha256, size: t1.envelope.size },
      { rel: "apiapi/sub/_", sha256: t2.envelope.sha256, size: t2.envelope.size },
    ].sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
    expect(tree).toEqual(expectedTree);
    expect((await treeHashes(root)).filter((f) => !f.rel.startsWith("out/"))).toEqual([]);
    expect((await stat("/etc/passwd")).mtimeMs).toBe(passwdBefore.mtimeMs);
    await expect(stat("/tmp/pwned.txt")).rejects.toThrow();

    // s3: the same keys under S3_PREFIX, and no key anywhere else in the bucket.
    const keys = await s3.listKeys("");
    expect(keys).toEqual(expectedTree.map((f) => `relay/${f.rel}`).sort());
    for (const f of expectedTree) expect((await s3.describe(`relay/${f.rel}`))?.sha256, f.rel).toBe(f.sha256);

    const seconds = ((Date.now() - t0) / 1000).toFixed(1);
    console.log(
      `hostile-envelopes: hostile=${hostile.length} dead-lettered=${dlqExpected.length}x${groups.length} groups sanitized=${sanitized.length} valid-written=${valid.length + 1}x${groups.length} outside-output=0 (${seconds}s)`,
    );
  });

  // Envelopes that are ambiguous or undecodable: an envelope header present twice (CRLF-smuggled,
  // or differing only in case) — clients disagree on which value wins; a 60 KiB content-type; a bare
  // CR or LF inside a header value (nats.js cannot decode such headers); an object payload whose
  // ce-filesize lies. Each is dead-lettered at once instead of written, guessed at, or retried forever.
  it("dead-letters duplicate/undecodable headers, oversized content-type, lying object size", async () => {
    await using nats = await startNats();
    await using pub = await createPublisher(nats.url);
    const out = join(root, "out");
    await using svc = startService("producer", {
      NATS_URL: nats.url,
      OUTPUT_DIR: out,
      ORGANIZE_BY: "none",
      FILENAME_TEMPLATE: "{{.RelDir}}/{{.Name}}{{.Ext}}",
      RETRY_BACKOFF_MS: "100",
    });
    await producerReady(svc);
    const cases: Hostile[] = [];
    const inj1 = testFile("inj/a.txt", "crlf injection\n");
    cases.push({ name: "CRLF smuggles a second ce-subject", file: inj1, expected: "ENVELOPE_INVALID" });
    await rawPublish(
      nats.port,
      "files.input",
      headerBlock(inj1, { "ce-filename": "a.txt\r\nce-subject: ../../etc/passwd" }),
      inj1.content,
    );
    const inj2 = testFile("inj/b.txt", "");
    cases.push({ name: "CRLF smuggles a second ce-payload", file: inj2, expected: "ENVELOPE_INVALID" });
    await rawPublish(
      nats.port,
      "files.input",
      headerBlock(inj2, { "content-type": "text/plain\r\nce-payload: object:secrets/loot" }),
      inj2.content,
    );
    const inj3 = testFile("inj/c.txt", "case fold\n");
    cases.push({ name: "CE-SUBJECT next to ce-subject", file: inj3, expected: "ENVELOPE_INVALID" });
    await rawPublish(
      nats.port,
      "files.input",
      headerBlock(inj3, { "ce-id": `${inj3.envelope.id}\r\nCE-SUBJECT: ../../../../tmp/pwned.txt` }),
      inj3.content,
    );
    const h3 = testFile("big/ctype.txt", "big content type\n");
    cases.push({ name: "60 KiB content-type", file: h3, expected: "ENVELOPE_INVALID" });
    await pub.publishRaw(h3, { "content-type": `text/plain; x=${"A".repeat(60 * 1024)}` });
    // Bare LF / bare CR inside a header value: stored by JetStream, but nats.js refuses to decode such
    // headers (values cannot contain CR/LF); the SDK dead-letters the message instead of letting it be
    // redelivered every ack_wait forever.
    const inj4 = testFile("inj/d\nx.txt", "bare lf\n");
    // Undecodable headers: ENVELOPE_INVALID, with the raw header lines kept in the dead letter.
    cases.push({ name: "bare LF in ce-subject/ce-filename", file: inj4, expected: "ENVELOPE_INVALID" });
    await rawPublish(nats.port, "files.input", headerBlock(inj4), inj4.content);
    const inj5 = testFile("inj/e.txt", "bare cr\n");
    cases.push({ name: "bare CR in ce-source", file: inj5, expected: "ENVELOPE_INVALID" });
    await rawPublish(nats.port, "files.input", headerBlock(inj5, { "ce-source": "api\rX-Evil: 1" }), inj5.content);
    // A lying ce-filesize on an object payload is caught from the object's meta before the disk
    // pre-check (DISK_SPACE_LOW, retried for as long as an outage lasts) could hold it forever.
    const objm = new Objm(pub.nc);
    const own = await objm.open("FILES_payloads");
    const objBytes = Buffer.from("small object\n".repeat(100));
    const objName = randomUUID();
    await own.put({ name: objName }, toStream(objBytes));
    const s5 = testFile("size/tib-object.bin", objBytes, {
      payload: { kind: "object", bucket: "FILES_payloads", name: objName },
      size: 1024 ** 4,
    });
    cases.push({ name: "ce-filesize 1 TiB naming a small object", file: s5, expected: "PAYLOAD_SIZE_MISMATCH" });
    await pub.publishRaw(s5, {}, Buffer.alloc(0));
    // Each should be dead-lettered promptly.
    await waitFor(async () => (await readDeadLetters(pub.nc, "file-producers")).length >= cases.length, {
      timeoutMs: 15_000,
      message: "all seven envelopes to be dead-lettered",
    });
    const dead = await readDeadLetters(pub.nc, "file-producers");
    const codes = Object.fromEntries(
      cases.map((c) => [
        c.name,
        dead.find((d) => (d.headers["ce-id"] ?? "") === c.file.envelope.id)?.code ?? "written",
      ]),
    );
    expect(codes).toEqual(Object.fromEntries(cases.map((c) => [c.name, c.expected])));
    // Whatever happens, nothing escapes OUTPUT_DIR.
    await expect(stat("/tmp/pwned.txt")).rejects.toThrow();
  });
});

function waitWrites(svc: RunningService, n: number) {
  return waitFor(
    () => {
      const lines = svc.logs().filter((l) => l.msg === "file written");
      return lines.length >= n ? lines : undefined;
    },
    { timeoutMs: 60_000, message: `${n} files written by producer ${svc.pid}` },
  );
}

function toStream(bytes: Buffer): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      controller.enqueue(new Uint8Array(bytes));
      controller.close();
    },
  });
}

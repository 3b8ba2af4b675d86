import { createHash, randomBytes, randomUUID } from "node:crypto";
import { Readable } from "node:stream";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import {
  buildEnvelope,
  EnvelopeError,
  headersToRecord,
  openPayload,
  parseEnvelope,
  provision,
  publishFile,
  readPayloadInfo,
  silentLogger,
} from "@filerelay/core/internal";
import { startNats } from "./support/index.js";

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

async function readAll(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(part);
  return Buffer.concat(parts);
}

describe("publishFile(): the one way to publish a file", () => {
  it("inline and Object Store paths, extensions, and the same id published twice stored once", async () => {
    await using nats = await startNats();
    const nc = await connect({ servers: nats.url });
    try {
      // A group, so that the interest stream keeps what is published.
      await provision(
        nc,
        { STREAM: "FILES", SUBJECT: "files.input", STREAM_REPLICAS: 1 },
        { log: silentLogger(), groups: ["readers"] },
      );
      const jsm = await jetstreamManager(nc);
      const stored = async (seq: number) => {
        const m = await jsm.streams.getMessage("FILES", { seq });
        if (!m) throw new Error(`no message ${seq}`);
        return { headers: headersToRecord(m.header), data: m.data };
      };

      // Bytes that fit: inline, with the extensions passed through.
      const small = Buffer.from("id,amount\n1,20\n");
      const parentId = randomUUID();
      const a = await publishFile(nc, small, {
        source: "api",
        subject: "in/a.csv",
        extensions: { parentid: parentId, jobid: "job-7", destination: "bucket-b" },
      });
      expect(a).toMatchObject({ size: small.length, sha256: sha256(small), duplicate: false });
      const msgA = await stored(a.seq);
      expect(Buffer.from(msgA.data).equals(small)).toBe(true);
      expect(msgA.headers).toMatchObject({
        "Nats-Msg-Id": a.id,
        "ce-id": a.id,
        "ce-source": "api",
        "ce-subject": "in/a.csv",
        "ce-filename": "a.csv",
        "content-type": "text/csv",
        "ce-payload": "inline",
        "ce-parentid": parentId,
        "ce-jobid": "job-7",
        "ce-destination": "bucket-b",
      });
      expect(parseEnvelope(msgA.headers).extensions).toEqual({
        parentid: parentId,
        jobid: "job-7",
        destination: "bucket-b",
      });

      // A stream larger than the inline limit: the Object Store first, then the envelope naming it.
      const big = randomBytes(700_000);
      const b = await publishFile(nc, Readable.from([big.subarray(0, 100_000), big.subarray(100_000)]), {
        source: "api",
        subject: "big.bin",
        mtime: new Date("2026-01-02T03:04:05Z"),
      });
      const msgB = await stored(b.seq);
      expect(msgB.data.length).toBe(0);
      expect(msgB.headers["ce-payload"]).toBe(`object:FILES_payloads/${b.id}`);
      expect(msgB.headers["ce-sha256"]).toBe(sha256(big));
      expect(msgB.headers["ce-mtime"]).toBe("2026-01-02T03:04:05.000Z");
      const envB = parseEnvelope(msgB.headers);
      expect(envB.extensions).toBeUndefined();
      expect((await readAll(openPayload(nc, envB, msgB.data) as AsyncIterable<Buffer>)).equals(big)).toBe(true);

      // A stream that turns out to fit is sent inline.
      const c = await publishFile(nc, Readable.from([Buffer.from("tiny")]), { source: "api", subject: "tiny.txt" });
      expect((await stored(c.seq)).headers["ce-payload"]).toBe("inline");

      // The same id again (a source that crashed and republishes): dropped by JetStream, one message.
      const again = await publishFile(nc, small, { id: a.id, source: "api", subject: "in/a.csv" });
      expect(again).toMatchObject({ id: a.id, seq: a.seq, duplicate: true });
      expect((await jsm.streams.info("FILES")).state.messages).toBe(3);

      // beforePublish may refuse after the upload: nothing is published and the object is removed.
      const refused = randomUUID();
      await expect(
        publishFile(
          nc,
          randomBytes(400_000),
          { id: refused, source: "api", subject: "changed.bin" },
          {
            beforePublish: () => {
              throw new Error("changed during the upload");
            },
          },
        ),
      ).rejects.toThrow("changed during the upload");
      expect(await readPayloadInfo(nc, { bucket: "FILES_payloads", name: refused })).toBeNull();
      expect((await jsm.streams.info("FILES")).state.messages).toBe(3);
    } finally {
      await nc.close();
    }
  });

  it("refuses a name no sink could accept before anything is sent", () => {
    expect(() =>
      buildEnvelope({ source: "api", subject: "../etc/passwd" }, { size: 1, sha256: "", payload: { kind: "inline" } }),
    ).toThrow(EnvelopeError);
    expect(() =>
      buildEnvelope(
        { source: "api", subject: "ok.txt", extensions: { traceparent: "not-a-trace" } },
        { size: 1, sha256: "", payload: { kind: "inline" } },
      ),
    ).toThrow(/ce-traceparent/);
  });
});

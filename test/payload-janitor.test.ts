import { createHash, randomBytes, randomUUID } from "node:crypto";
import { Readable } from "node:stream";
import { jetstream, jetstreamManager, type JsMsg } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import {
  createPayloadJanitor,
  deadLetter,
  envelopeToHeaders,
  jetstreamNames,
  objectChunkSubject,
  objectStreamName,
  provision,
  putPayloadObject,
  readPayloadInfo,
  silentLogger,
  type Envelope,
} from "@filerelay/core/internal";
import { startNats } from "./support/index.js";

const log = silentLogger();
const config = { STREAM: "FILES", SUBJECT: "files.input", STREAM_REPLICAS: 1 };
const bucket = jetstreamNames(config).payloadBucket;

async function uploadAndPublish(nc: NatsConnection): Promise<Envelope> {
  const data = randomBytes(600_000);
  const name = randomUUID();
  const put = await putPayloadObject(nc, { bucket, name, source: Readable.from([data]) });
  const envelope: Envelope = {
    id: name,
    source: "janitor",
    type: "io.filerelay.file.v1",
    time: new Date(),
    subject: `x/${name}.bin`,
    contentType: "application/octet-stream",
    filename: `${name}.bin`,
    size: data.length,
    sha256: createHash("sha256").update(data).digest("hex"),
    mtime: new Date(),
    payload: { kind: "object", bucket, name },
  };
  expect(put.sha256).toBe(envelope.sha256);
  await jetstream(nc).publish("files.input", new Uint8Array(), { headers: envelopeToHeaders(envelope) });
  return envelope;
}

/** Takes the next message of a group (a one-off pull). */
async function next(nc: NatsConnection, group: string): Promise<JsMsg> {
  const consumer = await jetstream(nc).consumers.get("FILES", group);
  const m = await consumer.next({ expires: 5000 });
  if (!m) throw new Error(`no message for ${group}`);
  return m;
}

async function chunkSubjects(nc: NatsConnection): Promise<string[]> {
  const jsm = await jetstreamManager(nc);
  const si = await jsm.streams.info(objectStreamName(bucket), { subjects_filter: `$O.${bucket}.C.>` });
  return Object.keys(si.state.subjects ?? {});
}

describe("payload janitor (real nats-server)", () => {
  it("keeps an object while one of two groups has not acked; removes it once both have", async () => {
    await using nats = await startNats();
    const nc = await connect({ servers: nats.url });
    await provision(nc, config, { log, groups: ["fs", "audit"] });
    await using janitor = createPayloadJanitor(nc, { config, log, intervalMs: 0, graceMs: 0 });

    const env = await uploadAndPublish(nc);
    const ref = { bucket, name: env.id };
    // Nobody acked yet.
    expect(await janitor.runOnce()).toMatchObject({ deleted: 0, referenced: 1 });
    expect(await readPayloadInfo(nc, ref)).not.toBeNull();

    // One group done, the other not: the envelope stays in the interest stream, so does the object.
    expect(await (await next(nc, "fs")).ackAck()).toBe(true);
    expect(await janitor.runOnce()).toMatchObject({ deleted: 0, referenced: 1 });
    const info = await readPayloadInfo(nc, ref);
    expect(info?.size).toBe(600_000);

    // Both done: gone, chunks included.
    expect(await (await next(nc, "audit")).ackAck()).toBe(true);
    expect((await (await jetstreamManager(nc)).streams.info("FILES")).state.messages).toBe(0);
    expect(await janitor.runOnce()).toMatchObject({ deleted: 1, referenced: 0 });
    expect(await readPayloadInfo(nc, ref)).toBeNull();
    expect(await chunkSubjects(nc)).not.toContain(objectChunkSubject(bucket, info?.nuid ?? ""));
    await nc.close();
  });

  it("a dead-lettered envelope keeps its object; young objects and uploads in progress are left alone", async () => {
    await using nats = await startNats();
    const nc = await connect({ servers: nats.url });
    await provision(nc, config, { log, groups: ["fs"] });

    const env = await uploadAndPublish(nc);
    const m = await next(nc, "fs");
    await deadLetter(nc, {
      group: "fs",
      headers: m.headers,
      body: m.data,
      code: "HANDLER_PERMANENT",
      error: "test",
      deliveries: 1,
    });
    expect(await m.ackAck()).toBe(true);
    {
      await using janitor = createPayloadJanitor(nc, { config, log, intervalMs: 0, graceMs: 0 });
      expect(await janitor.runOnce()).toMatchObject({ deleted: 0, referenced: 1 });
      expect(await readPayloadInfo(nc, { bucket, name: env.id })).not.toBeNull();
    }

    // Unreferenced (acked) but younger than the grace period: kept.
    const young = await uploadAndPublish(nc);
    expect(await (await next(nc, "fs")).ackAck()).toBe(true);
    await using patient = createPayloadJanitor(nc, { config, log, intervalMs: 0, graceMs: 60_000 });
    expect(await patient.runOnce()).toMatchObject({ deleted: 0, orphanChunksPurged: 0 });
    expect(await readPayloadInfo(nc, { bucket, name: young.id })).not.toBeNull();
    await nc.close();
  });

  it("purges chunks of an upload that never got its meta, once older than the grace period", async () => {
    await using nats = await startNats();
    const nc = await connect({ servers: nats.url });
    await provision(nc, config, { log });
    // A consumer that died mid-upload: chunks, no meta.
    const orphan = objectChunkSubject(bucket, "DEADUPLOAD0000000000000");
    for (let i = 0; i < 3; i++) await jetstream(nc).publish(orphan, randomBytes(128 * 1024));
    const kept = await putPayloadObject(nc, { bucket, name: "kept", source: Readable.from([randomBytes(1000)]) });

    await using patient = createPayloadJanitor(nc, { config, log, intervalMs: 0, graceMs: 60_000 });
    expect(await patient.runOnce()).toMatchObject({ orphanChunksPurged: 0 });
    expect(await chunkSubjects(nc)).toContain(orphan);

    // graceMs 1: the orphan's last chunk is older; "kept" is unreferenced too, so it goes as well.
    await using eager = createPayloadJanitor(nc, { config, log, intervalMs: 0, graceMs: 1 });
    const run = await eager.runOnce();
    expect(run.orphanChunksPurged).toBe(1);
    expect(await chunkSubjects(nc)).not.toContain(orphan);
    expect(run.deleted).toBe(1);
    expect(await chunkSubjects(nc)).not.toContain(objectChunkSubject(bucket, kept.nuid));
    await nc.close();
  });
});

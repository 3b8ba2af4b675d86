import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import type { NatsConnection } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import type { Envelope } from "../envelope.js";
import { PayloadError } from "../errors.js";
import { isVerifiedPayload, openPayload } from "./openPayload.js";

// The paths tested here fail or finish before any NATS call; a connection is never touched.
const noConnection = {} as NatsConnection;

function envelope(size: number, sha256: string, payload: Envelope["payload"] = { kind: "inline" }): Envelope {
  const now = new Date();
  return {
    id: "7d444840-9dc0-11d1-b245-5ffdce74fad2",
    source: "unit",
    type: "io.filerelay.file.v1",
    time: now,
    subject: "a.txt",
    contentType: "text/plain",
    filename: "a.txt",
    size,
    sha256,
    mtime: now,
    payload,
  };
}

async function collect(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream as AsyncIterable<Buffer>) parts.push(c);
  return Buffer.concat(parts);
}

describe("openPayload (inline)", () => {
  const body = Buffer.from("x".repeat(200_000));
  const sha = createHash("sha256").update(body).digest("hex");

  it("marks its streams as verified for exactly their envelope's file version", () => {
    const env = envelope(body.length, sha);
    const s = openPayload(noConnection, env, body);
    expect(isVerifiedPayload(s, env)).toBe(true);
    expect(isVerifiedPayload(s, { ...env })).toBe(true);
    expect(isVerifiedPayload(s, { ...env, sha256: "0".repeat(64) })).toBe(false);
    expect(isVerifiedPayload(s, { ...env, size: env.size + 1 })).toBe(false);
    expect(isVerifiedPayload(s, { ...env, id: "00000000-0000-4000-8000-000000000000" })).toBe(false);
    expect(isVerifiedPayload(Readable.from([body]), env)).toBe(false);
    s.destroy();
  });

  it("an abort of the caller's signal destroys an inline stream with its reason", async () => {
    const ac = new AbortController();
    const s = openPayload(noConnection, envelope(body.length, sha), body, { signal: ac.signal });
    const reason = new PayloadError("SHUTDOWN", "stop");
    ac.abort(reason);
    await expect(collect(s)).rejects.toBe(reason);
  });

  it("streams an inline body in slices and verifies it", async () => {
    const s = openPayload(noConnection, envelope(body.length, sha), body);
    expect((await collect(s)).equals(body)).toBe(true);
  });

  it("fails with distinct permanent codes before 'end'", async () => {
    let ended = false;
    const s = openPayload(noConnection, envelope(body.length, "0".repeat(64)), body);
    s.on("end", () => {
      ended = true;
    });
    const err = await collect(s).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PayloadError);
    expect((err as PayloadError).code).toBe("PAYLOAD_DIGEST_MISMATCH");
    expect((err as PayloadError).permanent).toBe(true);
    expect(ended).toBe(false);
    const short = await collect(openPayload(noConnection, envelope(body.length + 1, sha), body)).catch(
      (e: unknown) => e,
    );
    expect((short as PayloadError).code).toBe("PAYLOAD_SIZE_MISMATCH");
  });

  it("refuses a foreign bucket without contacting the broker", async () => {
    const env = envelope(10, sha, { kind: "object", bucket: "elsewhere", name: "x" });
    const err = await collect(
      openPayload(noConnection, env, new Uint8Array(), { allowedBuckets: ["FILES_payloads"] }),
    ).catch((e: unknown) => e);
    expect((err as PayloadError).code).toBe("PAYLOAD_FOREIGN_BUCKET");
  });
});

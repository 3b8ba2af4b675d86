import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdtemp, open, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { startNats, startService, waitFor } from "./support/index.js";
import { listFiles, outcomeLines, producerEnv } from "./producer-support.js";
import { auth, KEYS, startGateway, writeKeysFile } from "./gateway-support.js";

// The chunked upload API against the built gateway: chunks out of order, one re-sent, a restart in the middle.

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "gateway-chunked-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const MiB = 1024 * 1024;
/** Upload size in MiB: 200 keeps `pnpm test` quick; FILERELAY_GATEWAY_TEST_MB=2048 is the 2 GiB acceptance run. */
const TEST_MB = Number(process.env.FILERELAY_GATEWAY_TEST_MB ?? 200);

/** Writes `size` random bytes to `path`, returning their SHA-256. */
async function randomFile(path: string, size: number): Promise<string> {
  const hash = createHash("sha256");
  const fh = await open(path, "w");
  try {
    for (let left = size; left > 0;) {
      const part = randomBytes(Math.min(left, 4 * MiB));
      hash.update(part);
      await fh.write(part);
      left -= part.length;
    }
  } finally {
    await fh.close();
  }
  return hash.digest("hex");
}

async function readChunk(path: string, n: number, chunkSize: number): Promise<Buffer> {
  const fh = await open(path, "r");
  try {
    const buf = Buffer.alloc(chunkSize);
    const { bytesRead } = await fh.read(buf, 0, chunkSize, (n - 1) * chunkSize);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** Peak resident set size of a process, in bytes (VmHWM). */
/** SHA-256 of a file, streamed (files over 2 GiB cannot be read whole). */
async function fileSha(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

async function peakRss(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kb = /VmHWM:\s+(\d+) kB/.exec(status)?.[1];
  return Number(kb) * 1024;
}

describe("gateway: chunked upload", () => {
  it(
    `${TEST_MB} MiB in chunks out of order, one re-sent, gateway SIGKILLed and restarted half-way: SHA-256 equal, RSS bounded`,
    async () => {
      await using nats = await startNats();
      const env = {
        NATS_URL: nats.url,
        GATEWAY_API_KEYS_FILE: await writeKeysFile(root),
        GATEWAY_UPLOAD_DIR: join(root, "uploads"),
        LOG_LEVEL: "info",
      };
      let gw = await startGateway(env);
      const out = join(root, "out");
      await using producer = startService(
        "producer",
        producerEnv(nats.url, { OUTPUT_DIR: out, ORGANIZE_BY: "none", LOG_LEVEL: "info" }),
      );
      const src = join(root, "big.bin");
      const size = TEST_MB * MiB + 12_345;
      const chunkSize = 8 * MiB;
      const sha = await randomFile(src, size);

      const init = await fetch(`${gw.url}/api/v1/files/upload/init`, {
        method: "POST",
        headers: { ...auth(KEYS.upload), "content-type": "application/json" },
        body: JSON.stringify({ filename: "big.bin", size, sha256: sha, chunk_size: chunkSize, path: "bulk" }),
      });
      expect(init.status).toBe(201);
      const plan = (await init.json()) as { file_id: string; upload_id: string; total_chunks: number };
      const total = Math.ceil(size / chunkSize);
      expect(plan.total_chunks).toBe(total);

      const put = (n: number, body: Buffer) =>
        fetch(`${gw.url}/api/v1/files/upload/${plan.file_id}/chunk?upload_id=${plan.upload_id}&chunk_number=${n}`, {
          method: "PUT",
          headers: { ...auth(KEYS.upload), "content-type": "application/octet-stream" },
          body,
        });
      // Out of order: even chunks descending, then odd ones ascending.
      const evens = Array.from({ length: Math.floor(total / 2) }, (_, i) => 2 * Math.floor(total / 2) - 2 * i);
      const odds = Array.from({ length: Math.ceil(total / 2) }, (_, i) => 1 + 2 * i);
      const order = [...evens, ...odds];
      // Chunk 7 is first sent with wrong bytes (right length); the re-sent one must replace it.
      expect((await put(7, randomBytes(chunkSize))).status).toBe(200);
      const complete = () =>
        fetch(`${gw.url}/api/v1/files/upload/${plan.file_id}/complete?upload_id=${plan.upload_id}`, {
          method: "POST",
          headers: auth(KEYS.upload),
        });
      for (const [i, n] of order.entries()) {
        if (i === Math.floor(total / 2)) {
          // Half-way: the gateway dies; the chunks received so far are on disk.
          const early = await complete();
          expect(early.status).toBe(409);
          expect(await early.json()).toMatchObject({ code: "UPLOAD_INCOMPLETE" });
          await gw.kill();
          gw = await startGateway(env, gw.port);
        }
        const res = await put(n, await readChunk(src, n, chunkSize));
        expect(res.status, await res.text()).toBe(200);
      }
      // A wrong length is refused and replaces nothing.
      const short = await put(3, randomBytes(100));
      expect(short.status).toBe(400);

      const done = await complete();
      expect(done.status, await done.clone().text()).toBe(201);
      const answer = (await done.json()) as { file_id: string; sha256: string; size: number };
      expect(answer).toMatchObject({ file_id: plan.file_id, sha256: sha, size });
      // A retried complete gets the same answer and publishes nothing new.
      const again = await complete();
      expect(again.status).toBe(200);
      expect(await again.json()).toMatchObject({ file_id: plan.file_id, sha256: sha });

      const rss = await peakRss(gw.pid);
      console.log(`chunked ${TEST_MB} MiB: gateway peak RSS ${Math.round(rss / MiB)} MiB`);
      expect(rss, `gateway peak RSS ${Math.round(rss / MiB)} MiB`).toBeLessThan(200 * MiB);

      await waitFor(() => outcomeLines(producer).length >= 1, { timeoutMs: 180_000, message: "file written" });
      const written = await listFiles(out);
      expect(written).toHaveLength(1);
      expect(await fileSha(join(out, written[0]!))).toBe(sha);
      expect(outcomeLines(producer)[0]!.path).toBe("bulk/big.bin");
      await gw.stop();
    },
    300_000 + TEST_MB * 1000,
  );

  it("complete refuses a wrong SHA-256 (422) and publishes nothing; another key may not continue the upload", async () => {
    await using nats = await startNats();
    await using gw = await startGateway({
      NATS_URL: nats.url,
      GATEWAY_API_KEYS_FILE: await writeKeysFile(root),
      GATEWAY_UPLOAD_DIR: join(root, "uploads"),
    });
    const content = randomBytes(5000);
    const init = await fetch(`${gw.url}/api/v1/files/upload/init`, {
      method: "POST",
      headers: { ...auth(KEYS.upload), "content-type": "application/json" },
      body: JSON.stringify({ filename: "x.bin", size: 5000, sha256: "ab".repeat(32), chunk_size: 4096 }),
    });
    const plan = (await init.json()) as { file_id: string; upload_id: string };
    const url = (n: number) =>
      `${gw.url}/api/v1/files/upload/${plan.file_id}/chunk?upload_id=${plan.upload_id}&chunk_number=${n}`;
    const octets = { "content-type": "application/octet-stream" };
    expect(
      (
        await fetch(url(2), {
          method: "PUT",
          headers: { ...auth(KEYS.upload), ...octets },
          body: content.subarray(4096),
        })
      ).status,
    ).toBe(200);
    expect(
      (
        await fetch(url(1), {
          method: "PUT",
          headers: { ...auth(KEYS.upload), ...octets },
          body: content.subarray(0, 4096),
        })
      ).status,
    ).toBe(200);
    expect(
      (
        await fetch(url(3), {
          method: "PUT",
          headers: { ...auth(KEYS.upload), ...octets },
          body: content.subarray(0, 10),
        })
      ).status,
    ).toBe(400);
    const wrongUpload = await fetch(url(1).replace(plan.upload_id, "0".repeat(32)), {
      method: "PUT",
      headers: { ...auth(KEYS.upload), ...octets },
      body: content.subarray(0, 4096),
    });
    expect(wrongUpload.status).toBe(404);
    const otherKey = await fetch(`${gw.url}/api/v1/files/upload/${plan.file_id}/complete?upload_id=${plan.upload_id}`, {
      method: "POST",
      headers: auth(KEYS.read),
    });
    expect(otherKey.status).toBe(403);
    const res = await fetch(`${gw.url}/api/v1/files/upload/${plan.file_id}/complete?upload_id=${plan.upload_id}`, {
      method: "POST",
      headers: auth(KEYS.upload),
    });
    expect(res.status).toBe(422);
    expect(await res.json()).toMatchObject({ code: "CHECKSUM_MISMATCH" });
    const { connect } = await import("@nats-io/transport-node");
    const { jetstreamManager } = await import("@nats-io/jetstream");
    const nc = await connect({ servers: nats.url });
    expect((await (await jetstreamManager(nc)).streams.info("FILES")).state.messages).toBe(0);
    await nc.close();
  });
});

import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, rm } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { it } from "vitest";
import { startNats } from "../support/index.js";
import { auth, KEYS, startGateway, writeKeysFile } from "../gateway-support.js";
import { loadNote, machineInfo, memoryOf, percentile, tempDir, writeLarge, writeResult } from "./benchSupport.js";

const run = promisify(execFile);
const MiB = 1024 * 1024;
const SMALL_FILES = Number(process.env.BENCH_GATEWAY_FILES ?? 1000);
const CONNECTIONS = 8;
const LARGE_BYTES = Number(process.env.BENCH_GATEWAY_LARGE_BYTES ?? 1024 ** 3);
const CHUNKED_BYTES = Number(process.env.BENCH_GATEWAY_CHUNKED_BYTES ?? 2 * 1024 ** 3);

async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const c of createReadStream(path)) h.update(c as Buffer);
  return h.digest("hex");
}

/** The gateway: small uploads over keep-alive connections, one large multipart upload against a discard baseline, a large chunked upload. */
it("gateway: 1,000 × 4 KiB over 8 connections; 1 GiB multipart vs curl to a discarding server; 2 GiB chunked", async () => {
  const dir = await tempDir("gateway");
  try {
    await using nats = await startNats();
    await using gw = await startGateway({
      NATS_URL: nats.url,
      GATEWAY_API_KEYS_FILE: await writeKeysFile(dir),
      GATEWAY_UPLOAD_DIR: join(dir, "uploads"),
      RATE_LIMIT_PER_MINUTE: "0",
      LOG_LEVEL: "info",
    });
    // 1. Small files: each answered after its PubAck (the stream keeps them: no sink group reads in this run).
    const latencies: number[] = [];
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: CONNECTIONS }, async () => {
        for (let i = next++; i < SMALL_FILES; i = next++) {
          const form = new FormData();
          form.append("file", new Blob([Buffer.alloc(4096, i % 251)]), `small-${i}.bin`);
          const started = performance.now();
          const res = await fetch(`${gw.url}/api/v1/files/upload`, {
            method: "POST",
            headers: auth(KEYS.upload),
            body: form,
          });
          if (res.status !== 201) throw new Error(`upload ${i}: ${res.status} ${await res.text()}`);
          await res.arrayBuffer();
          latencies.push(performance.now() - started);
        }
      }),
    );
    const smallSeconds = (performance.now() - t0) / 1000;
    latencies.sort((a, b) => a - b);

    // 2. One large multipart upload with curl, and the same curl to a server that discards the body.
    const large = join(dir, "large.bin");
    await writeLarge(large, LARGE_BYTES);
    const discard = createServer((req, res) => {
      req.resume();
      req.on("end", () => res.writeHead(201).end("{}"));
    });
    await new Promise<void>((resolve) => discard.listen(0, "127.0.0.1", resolve));
    const curlSeconds = async (url: string) => {
      const { stdout } = await run("curl", [
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{time_total}",
        "-H",
        `Authorization: Bearer ${KEYS.upload}`,
        "-F",
        `file=@${large}`,
        url,
      ]);
      const [code, seconds] = stdout.trim().split(" ");
      if (code !== "201") throw new Error(`curl ${url}: ${code}`);
      return Number(seconds);
    };
    const baseline = await curlSeconds(`http://127.0.0.1:${(discard.address() as AddressInfo).port}/`);
    discard.close();
    const gatewayLarge = await curlSeconds(`${gw.url}/api/v1/files/upload`);
    const afterLarge = await memoryOf(gw.pid);
    await rm(large);

    // 3. A large chunked upload, 8 MiB chunks sent in order, complete checks SHA-256.
    const chunked = join(dir, "chunked.bin");
    await writeLarge(chunked, CHUNKED_BYTES);
    const sha = await sha256File(chunked);
    const init = await fetch(`${gw.url}/api/v1/files/upload/init`, {
      method: "POST",
      headers: { ...auth(KEYS.upload), "content-type": "application/json" },
      body: JSON.stringify({ filename: "chunked.bin", size: CHUNKED_BYTES, sha256: sha, chunk_size: 8 * MiB }),
    });
    const plan = (await init.json()) as { file_id: string; upload_id: string; total_chunks: number };
    const fh = await open(chunked, "r");
    const c0 = performance.now();
    try {
      for (let n = 1; n <= plan.total_chunks; n++) {
        const buf = Buffer.alloc(8 * MiB);
        const { bytesRead } = await fh.read(buf, 0, buf.length, (n - 1) * 8 * MiB);
        const res = await fetch(
          `${gw.url}/api/v1/files/upload/${plan.file_id}/chunk?upload_id=${plan.upload_id}&chunk_number=${n}`,
          {
            method: "PUT",
            headers: { ...auth(KEYS.upload), "content-type": "application/octet-stream" },
            body: buf.subarray(0, bytesRead),
          },
        );
        if (res.status !== 200) throw new Error(`chunk ${n}: ${res.status}`);
      }
    } finally {
      await fh.close();
    }
    const done = await fetch(`${gw.url}/api/v1/files/upload/${plan.file_id}/complete?upload_id=${plan.upload_id}`, {
      method: "POST",
      headers: auth(KEYS.upload),
    });
    if (done.status !== 201) throw new Error(`complete: ${done.status} ${await done.text()}`);
    const chunkedSeconds = (performance.now() - c0) / 1000;
    const peak = await memoryOf(gw.pid);
    await rm(chunked);

    await writeResult({
      name: "gateway",
      takenAt: new Date().toISOString(),
      machine: await machineInfo(),
      metrics: {
        small_files: SMALL_FILES,
        small_files_per_s: Math.round(SMALL_FILES / smallSeconds),
        small_p50_ms: Math.round(percentile(latencies, 50) * 10) / 10,
        small_p99_ms: Math.round(percentile(latencies, 99) * 10) / 10,
        large_bytes: LARGE_BYTES,
        large_gateway_MBps: Math.round(LARGE_BYTES / MiB / gatewayLarge),
        large_discard_baseline_MBps: Math.round(LARGE_BYTES / MiB / baseline),
        large_gateway_peak_rss_MB: afterLarge?.peakMB ?? null,
        chunked_bytes: CHUNKED_BYTES,
        chunked_MBps_incl_complete: Math.round(CHUNKED_BYTES / MiB / chunkedSeconds),
        gateway_peak_rss_MB: peak?.peakMB ?? null,
      },
      notes: [loadNote()],
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

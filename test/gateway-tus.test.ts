import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdtemp, open, readFile, rm } from "node:fs/promises";
import { createServer, connect as tcpConnect, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Upload } from "tus-js-client";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { freePort, startNats, startService, waitFor } from "./support/index.js";
import { listFiles, outcomeLines, producerEnv, sha256 } from "./producer-support.js";
import { auth, KEYS, startGateway, writeKeysFile, type Gateway } from "./gateway-support.js";

// tus 1.0 against the built gateway with the standard client (tus-js-client, Node).

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "gateway-tus-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const MiB = 1024 * 1024;
/** Upload size in MiB: 200 keeps `pnpm test` quick; FILERELAY_GATEWAY_TEST_MB=2048 is the 2 GiB acceptance run. */
const TEST_MB = Number(process.env.FILERELAY_GATEWAY_TEST_MB ?? 200);

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

/** A TCP proxy in front of the gateway whose connections can be cut at will (a network failure). */
async function cuttableProxy(targetPort: number): Promise<{ port: number; cut(): void; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = tcpConnect(targetPort, "127.0.0.1");
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  return {
    port,
    cut: () => {
      for (const s of sockets) s.destroy();
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** SHA-256 of a file, streamed (files over 2 GiB cannot be read whole). */
async function fileSha(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

async function peakRss(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1]) * 1024;
}

describe("gateway: tus", () => {
  it(
    `tus-js-client: ${TEST_MB} MiB with the connection cut and the gateway SIGKILLed mid-way completes, SHA-256 equal`,
    async () => {
      await using nats = await startNats();
      const env = {
        NATS_URL: nats.url,
        GATEWAY_API_KEYS_FILE: await writeKeysFile(root),
        GATEWAY_UPLOAD_DIR: join(root, "uploads"),
        LOG_LEVEL: "info",
      };
      let gw: Gateway = await startGateway(env);
      const proxy = await cuttableProxy(gw.port);
      const out = join(root, "out");
      await using producer = startService(
        "producer",
        producerEnv(nats.url, { OUTPUT_DIR: out, ORGANIZE_BY: "none", LOG_LEVEL: "info" }),
      );
      const src = join(root, "video.bin");
      const size = TEST_MB * MiB + 4321;
      const sha = await randomFile(src, size);

      let cut = false;
      let restarting: Promise<void> | undefined;
      const events: string[] = [];
      const fileId = await new Promise<string>((resolve, reject) => {
        const upload = new Upload(createReadStream(src), {
          endpoint: `http://127.0.0.1:${proxy.port}/api/v1/tus/`,
          chunkSize: 32 * MiB,
          uploadSize: size,
          headers: auth(KEYS.upload),
          metadata: { filename: "video.bin", path: "media" },
          retryDelays: Array.from({ length: 40 }, () => 500),
          onProgress: (sent) => {
            if (!cut && sent > size / 4) {
              cut = true;
              events.push(`cut at ${sent}`);
              proxy.cut();
            } else if (cut && !restarting && sent > size * 0.6) {
              events.push(`kill at ${sent}`);
              restarting = (async () => {
                await gw.kill();
                gw = await startGateway(env, gw.port);
              })();
            }
          },
          onAfterResponse: (_req, res) => {
            const id = res.getHeader("Filerelay-File-Id");
            if (id) resolve(id);
          },
          onError: reject,
        });
        upload.start();
      });
      await restarting;
      expect(events).toHaveLength(2);

      await waitFor(() => outcomeLines(producer).length >= 1, { timeoutMs: 180_000, message: "file written" });
      const written = await listFiles(out);
      expect(written).toHaveLength(1);
      expect(await fileSha(join(out, written[0]!))).toBe(sha);
      expect(outcomeLines(producer)[0]!).toMatchObject({ path: "media/video.bin", fileId });
      // The finished upload is removed from GATEWAY_UPLOAD_DIR once published.
      expect(await listFiles(join(root, "uploads", "tus"))).toEqual([]);
      const rss = await peakRss(gw.pid);
      console.log(`tus ${TEST_MB} MiB: restarted gateway peak RSS ${Math.round(rss / MiB)} MiB; ${events.join(", ")}`);
      expect(rss).toBeLessThan(200 * MiB);
      await proxy.close();
      await gw.stop();
    },
    300_000 + TEST_MB * 1000,
  );

  it("creation, checksum (460 on a mismatch, nothing kept), termination, and the OPTIONS advertisement", async () => {
    await using nats = await startNats();
    await using gw = await startGateway({
      NATS_URL: nats.url,
      GATEWAY_API_KEYS_FILE: await writeKeysFile(root),
      GATEWAY_UPLOAD_DIR: join(root, "uploads"),
      ALLOWED_CONTENT_TYPES: "text/plain,application/octet-stream",
    });
    const base = `${gw.url}/api/v1/tus/`;
    const tusHeaders = { "tus-resumable": "1.0.0", ...auth(KEYS.upload) };
    const b64 = (s: string) => Buffer.from(s).toString("base64");

    const options = await fetch(base, { method: "OPTIONS", headers: { "tus-resumable": "1.0.0" } });
    expect(options.status).toBe(204);
    const extensions = options.headers.get("tus-extension")?.split(",") ?? [];
    expect(extensions).toEqual(expect.arrayContaining(["creation", "termination", "checksum", "expiration"]));
    expect(options.headers.get("tus-checksum-algorithm")).toContain("sha1");

    expect(
      (await fetch(base, { method: "POST", headers: { "tus-resumable": "1.0.0", "upload-length": "5" } })).status,
    ).toBe(401);
    const readOnly = await fetch(base, {
      method: "POST",
      headers: { ...tusHeaders, ...auth(KEYS.read), "upload-length": "5" },
    });
    expect(readOnly.status).toBe(403);
    const html = await fetch(base, {
      method: "POST",
      headers: { ...tusHeaders, "upload-length": "5", "upload-metadata": `filename ${b64("x.html")}` },
    });
    expect(html.status).toBe(415);

    const content = Buffer.from("hello, tus checksum\n");
    const created = await fetch(base, {
      method: "POST",
      headers: {
        ...tusHeaders,
        "upload-length": String(content.length),
        "upload-metadata": `filename ${b64("c.txt")}`,
      },
    });
    expect(created.status).toBe(201);
    const location = new URL(created.headers.get("location")!, base).toString();
    const patch = (body: Buffer, checksum: string) =>
      fetch(location, {
        method: "PATCH",
        headers: {
          ...tusHeaders,
          "content-type": "application/offset+octet-stream",
          "upload-offset": "0",
          "upload-checksum": checksum,
        },
        body,
      });
    const sha1 = (b: Buffer) => createHash("sha1").update(b).digest("base64");
    const bad = await patch(content, `sha1 ${sha1(Buffer.from("something else"))}`);
    expect(bad.status).toBe(460);
    const head = await fetch(location, { method: "HEAD", headers: tusHeaders });
    expect(head.headers.get("upload-offset")).toBe("0");
    const good = await patch(content, `sha1 ${sha1(content)}`);
    expect(good.status).toBe(204);
    expect(good.headers.get("filerelay-sha256")).toBe(sha256(content));
    expect(good.headers.get("filerelay-file-id")).toMatch(/^[0-9a-f-]{36}$/);

    const doomed = await fetch(base, {
      method: "POST",
      headers: { ...tusHeaders, "upload-length": "100", "upload-metadata": `filename ${b64("d.txt")}` },
    });
    const doomedUrl = new URL(doomed.headers.get("location")!, base).toString();
    expect((await fetch(doomedUrl, { method: "DELETE", headers: tusHeaders })).status).toBe(204);
    expect([404, 410]).toContain((await fetch(doomedUrl, { method: "HEAD", headers: tusHeaders })).status);
  });
});

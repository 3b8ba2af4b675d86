import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { request } from "node:http";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { startNats, startService, waitFor } from "./support/index.js";
import { fileSha, listFiles, outcomeLines, producerEnv, sha256 } from "./producer-support.js";
import { auth, KEYS, startGateway, writeKeysFile } from "./gateway-support.js";

// Multipart uploads through the built gateway, answered after the PubAck, landed by a real producer.

const run = promisify(execFile);
let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "gateway-upload-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

async function gatewayEnv(natsUrl: string, extra: Record<string, string> = {}): Promise<Record<string, string>> {
  return {
    NATS_URL: natsUrl,
    GATEWAY_API_KEYS_FILE: await writeKeysFile(root),
    GATEWAY_UPLOAD_DIR: join(root, "uploads"),
    ...extra,
  };
}

async function curl(args: string[]): Promise<{ status: number; body: string }> {
  const { stdout } = await run("curl", ["-sS", "-w", "\n%{http_code}", ...args], { maxBuffer: 16 * 1024 * 1024 });
  const cut = stdout.lastIndexOf("\n");
  return { status: Number(stdout.slice(cut + 1)), body: stdout.slice(0, cut) };
}

/** Envelopes in the stream and objects in the payload bucket's stream. */
async function brokerCounts(natsUrl: string): Promise<{ envelopes: number; objects: number }> {
  const nc = await connect({ servers: natsUrl });
  try {
    const jsm = await jetstreamManager(nc);
    const envelopes = (await jsm.streams.info("FILES")).state.messages;
    const objects = await jsm.streams
      .info("OBJ_FILES_payloads")
      .then((i) => i.state.messages)
      .catch(() => 0);
    return { envelopes, objects };
  } finally {
    await nc.close();
  }
}

describe("gateway: multipart upload", () => {
  it("curl -F file=@a -F file=@b → 201 after the PubAck; both land byte-identical through a producer", async () => {
    await using nats = await startNats();
    await using gw = await startGateway(await gatewayEnv(nats.url));
    const out = join(root, "out");
    await using producer = startService("producer", producerEnv(nats.url, { OUTPUT_DIR: out, ORGANIZE_BY: "none" }));
    const a = join(root, "a.csv");
    const b = join(root, "b.bin");
    await writeFile(a, "id,name\n1,alpha\n2,beta\n");
    await writeFile(b, randomBytes(3 * 1024 * 1024 + 17));

    const res = await curl([
      "-H",
      `Authorization: Bearer ${KEYS.upload}`,
      "-F",
      "path=reports/2026",
      "-F",
      `file=@${a}`,
      "-F",
      `file=@${b}`,
      `${gw.url}/api/v1/files/upload`,
    ]);
    expect(res.status, res.body).toBe(201);
    const body = JSON.parse(res.body) as {
      files: { file_id: string; filename: string; size: number; sha256: string; status_url: string }[];
    };
    expect(body.files.map((f) => f.filename)).toEqual(["a.csv", "b.bin"]);
    expect(body.files[0]!.sha256).toBe(await fileSha(a));
    expect(body.files[1]!.sha256).toBe(await fileSha(b));
    expect(body.files[1]!.size).toBe(3 * 1024 * 1024 + 17);
    expect(body.files[0]!.status_url).toBe(`/api/v1/files/${body.files[0]!.file_id}/status`);

    await waitFor(() => outcomeLines(producer).length >= 2, { timeoutMs: 60_000, message: "2 files written" });
    const written = await listFiles(out);
    expect(written).toHaveLength(2);
    const shas = await Promise.all(written.map((p) => fileSha(join(out, p))));
    expect(shas.sort()).toEqual([await fileSha(a), await fileSha(b)].sort());
    // Each key publishes as its own source: the upload key is "ci".
    expect(outcomeLines(producer).map((l) => l.source)).toEqual(["ci", "ci"]);
    // The default FILENAME_TEMPLATE keeps the uploaded names recognizable.
    expect(written.map((p) => p.replace(/-[0-9a-f]{8}(?=\.)/, "")).sort()).toEqual(["a.csv", "b.bin"]);
    const subjects = outcomeLines(producer).map((l) => l.path);
    expect(subjects.sort()).toEqual(["reports/2026/a.csv", "reports/2026/b.bin"]);
  });

  it("refuses: 401 without a key, 403 for a read key, 415 outside ALLOWED_CONTENT_TYPES, 413 over MAX_UPLOAD_SIZE, 429 over the rate", async () => {
    await using nats = await startNats();
    await using gw = await startGateway(
      await gatewayEnv(nats.url, {
        MAX_UPLOAD_SIZE: "1MiB",
        ALLOWED_CONTENT_TYPES: "text/csv,application/octet-stream",
        RATE_LIMIT_PER_MINUTE: "8",
      }),
    );
    const url = `${gw.url}/api/v1/files/upload`;
    const form = (name: string, bytes: Uint8Array) => {
      const f = new FormData();
      f.append("file", new Blob([bytes]), name);
      return f;
    };
    const small = Buffer.from("a,b\n1,2\n");
    const post = (headers: Record<string, string>, body: FormData) => fetch(url, { method: "POST", headers, body });

    const noKey = await post({}, form("a.csv", small));
    expect(noKey.status).toBe(401);
    expect(await noKey.json()).toMatchObject({ code: "AUTH_REQUIRED" });
    const badKey = await post(auth("not-a-key"), form("a.csv", small));
    expect(badKey.status).toBe(401);
    const readKey = await post(auth(KEYS.read), form("a.csv", small));
    expect(readKey.status).toBe(403);
    expect(await readKey.json()).toMatchObject({ code: "AUTH_FORBIDDEN" });

    const html = await post(auth(KEYS.upload), form("page.html", Buffer.from("<p>hi</p>")));
    expect(html.status).toBe(415);
    expect(await html.json()).toMatchObject({ code: "CONTENT_TYPE_NOT_ALLOWED" });

    const big = await post(auth(KEYS.upload), form("big.bin", randomBytes(1024 * 1024 + 1)));
    expect(big.status).toBe(413);
    const bigBody = (await big.json()) as { error: string; code: string };
    expect(bigBody.code).toBe("UPLOAD_TOO_LARGE");
    expect(JSON.stringify(bigBody)).not.toMatch(/ at .*\.js/);

    const ok = await post(auth(KEYS.upload), form("exact.bin", randomBytes(1024 * 1024)));
    expect(ok.status).toBe(201);
    expect((await brokerCounts(nats.url)).envelopes).toBe(1);

    // The upload key has used 3 of its 8 requests; the 9th within the minute is refused.
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push((await post(auth(KEYS.upload), form(`r${i}.csv`, small))).status);
    expect(statuses).toEqual([201, 201, 201, 201, 201]);
    const limited = await post(auth(KEYS.upload), form("r.csv", small));
    expect(limited.status).toBe(429);
    expect(await limited.json()).toMatchObject({ code: "RATE_LIMITED" });
    // Another key has its own budget; health checks are never limited.
    expect((await post(auth(KEYS.admin), form("admin.csv", small))).status).toBe(201);
    expect((await fetch(`${gw.url}/healthz`)).status).toBe(200);
  });

  it("a malformed or truncated multipart body gets 400 and publishes nothing, not even the complete file before it", async () => {
    await using nats = await startNats();
    await using gw = await startGateway(await gatewayEnv(nats.url));
    const boundary = "----filerelayTestBoundary";
    const first = Buffer.from("x,y\n1,2\n");
    const second = randomBytes(600 * 1024);
    const body = Buffer.concat([
      Buffer.from(
        `--${boundary}\r\ncontent-disposition: form-data; name="file"; filename="first.csv"\r\ncontent-type: text/csv\r\n\r\n`,
      ),
      first,
      Buffer.from(
        `\r\n--${boundary}\r\ncontent-disposition: form-data; name="file"; filename="second.bin"\r\ncontent-type: application/octet-stream\r\n\r\n`,
      ),
      second,
      // No closing boundary: the body ends in the middle of the second file.
    ]);
    const send = (payload: Buffer, contentType: string) =>
      new Promise<{ status: number; text: string }>((resolve, reject) => {
        const req = request(
          `${gw.url}/api/v1/files/upload`,
          {
            method: "POST",
            headers: { ...auth(KEYS.upload), "content-type": contentType, "content-length": payload.length },
          },
          (res) => {
            let text = "";
            res.on("data", (c: Buffer) => (text += c.toString()));
            res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
          },
        );
        req.on("error", reject);
        req.end(payload);
      });
    const truncated = await send(body, `multipart/form-data; boundary=${boundary}`);
    expect(truncated.status, truncated.text).toBe(400);
    expect(JSON.parse(truncated.text)).toMatchObject({ code: "REQUEST_INVALID" });

    const garbage = await send(
      Buffer.from("this is not multipart at all"),
      `multipart/form-data; boundary=${boundary}`,
    );
    expect(garbage.status, garbage.text).toBe(400);
    const noBoundary = await send(Buffer.from("--x\r\n"), "multipart/form-data");
    expect(noBoundary.status, noBoundary.text).toBe(400);

    // Nothing published, and the second file's payload object was removed again.
    await waitFor(async () => (await brokerCounts(nats.url)).objects === 0, {
      timeoutMs: 10_000,
      message: "no payload object left",
    });
    expect(await brokerCounts(nats.url)).toEqual({ envelopes: 0, objects: 0 });
    // The gateway keeps serving.
    const f = new FormData();
    f.append("file", new Blob([first]), "first.csv");
    const ok = await fetch(`${gw.url}/api/v1/files/upload`, { method: "POST", headers: auth(KEYS.upload), body: f });
    expect(ok.status).toBe(201);
    expect((await brokerCounts(nats.url)).envelopes).toBe(1);
    expect(sha256(first)).toBe(((await ok.json()) as { files: { sha256: string }[] }).files[0]!.sha256);
  });
});

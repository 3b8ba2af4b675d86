import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { startNats, startService, waitFor } from "./support/index.js";
import { fileSha, listFiles, outcomeLines, producerEnv, sha256 } from "./producer-support.js";
import { auth, KEYS, startGateway, writeKeysFile } from "./gateway-support.js";

// The status API and the WebSocket against the built gateway, with a real producer recording deliveries.

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "gateway-status-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

interface WsMessage {
  file_id: string;
  state: string;
  progress: number | null;
  bytes: number;
  total: number | null;
}

async function upload(url: string, name: string, content: Buffer): Promise<string> {
  const form = new FormData();
  form.append("file", new Blob([content]), name);
  const res = await fetch(`${url}/api/v1/files/upload`, { method: "POST", headers: auth(KEYS.upload), body: form });
  expect(res.status).toBe(201);
  return ((await res.json()) as { files: { file_id: string }[] }).files[0]!.file_id;
}

describe("gateway: status API and live progress", () => {
  it("a WebSocket client sees progress rise to 1.0 and `delivered`; the record shows where the file landed", async () => {
    await using nats = await startNats();
    await using gw = await startGateway({
      NATS_URL: nats.url,
      GATEWAY_API_KEYS_FILE: await writeKeysFile(root),
      GATEWAY_UPLOAD_DIR: join(root, "uploads"),
    });
    const out = join(root, "out");
    await using producer = startService("producer", producerEnv(nats.url, { OUTPUT_DIR: out, ORGANIZE_BY: "none" }));
    await producer.waitForLog((l) => l.msg === "consuming files", 30_000, "producer ready");

    const refused = new WebSocket(`${gw.url.replace("http", "ws")}/ws`);
    const closeCode = await new Promise<number>((resolve) => refused.addEventListener("close", (e) => resolve(e.code)));
    expect(closeCode).toBe(4401);

    const messages: WsMessage[] = [];
    const ws = new WebSocket(`${gw.url.replace("http", "ws")}/ws?access_token=${KEYS.read}`);
    ws.addEventListener("message", (e) => messages.push(JSON.parse(String(e.data)) as WsMessage));
    await new Promise<void>((resolve, reject) => {
      ws.addEventListener("open", () => resolve());
      ws.addEventListener("error", () => reject(new Error("websocket failed")));
    });

    const content = randomBytes(6 * 1024 * 1024);
    const id = await upload(gw.url, "movie.bin", content);
    await waitFor(() => messages.some((m) => m.file_id === id && m.state === "delivered"), {
      timeoutMs: 60_000,
      message: "a delivered message on the WebSocket",
    });
    const mine = messages.filter((m) => m.file_id === id);
    const progress = mine.map((m) => m.progress).filter((p): p is number => p !== null);
    expect(progress.length).toBeGreaterThan(1);
    expect(Math.max(...progress)).toBe(1);
    expect(mine.at(-1)).toMatchObject({ state: "delivered", progress: 1, total: content.length });
    ws.close();

    const rec = await fetch(`${gw.url}/api/v1/files/${id}`, { headers: auth(KEYS.read) });
    expect(rec.status).toBe(200);
    const record = (await rec.json()) as {
      state: string;
      source: string;
      sha256: string;
      deliveries: Record<string, { state: string; location?: string }>;
    };
    expect(record).toMatchObject({ state: "delivered", source: "ci", sha256: sha256(content) });
    const location = record.deliveries["file-producers"]?.location ?? "";
    expect(location).toMatch(/^file:\/\//);
    const written = await listFiles(out);
    expect(written).toHaveLength(1);
    expect(location.endsWith(written[0]!)).toBe(true);
    expect(await fileSha(join(out, written[0]!))).toBe(sha256(content));

    const status = await (await fetch(`${gw.url}/api/v1/files/${id}/status`, { headers: auth(KEYS.read) })).json();
    expect(status).toMatchObject({ file_id: id, state: "delivered", progress: 1, total: content.length });
    const result = await (await fetch(`${gw.url}/api/v1/files/${id}/result`, { headers: auth(KEYS.read) })).json();
    expect(result).toMatchObject({ file_id: id, locations: { "file-producers": { state: "delivered", location } } });
    const list = (await (
      await fetch(`${gw.url}/api/v1/files?source=ci&state=delivered&limit=10`, { headers: auth(KEYS.read) })
    ).json()) as { files: { id: string }[] };
    expect(list.files.map((f) => f.id)).toContain(id);

    expect((await fetch(`${gw.url}/api/v1/files/${id}`)).status).toBe(401);
    expect(
      (await fetch(`${gw.url}/api/v1/files/00000000-0000-4000-8000-000000000000`, { headers: auth(KEYS.read) })).status,
    ).toBe(404);
    const notFailed = await fetch(`${gw.url}/api/v1/files/${id}/process`, {
      method: "POST",
      headers: auth(KEYS.upload),
    });
    expect(notFailed.status).toBe(409);
    // The producer's log line is read from its stdout pipe: it may arrive after the ledger's entry.
    await waitFor(() => outcomeLines(producer).length >= 1, { message: "the producer's outcome line" });
    expect(outcomeLines(producer)).toHaveLength(1);
  });

  it("POST /process re-runs a dead-lettered file once the sink accepts it", async () => {
    await using nats = await startNats();
    await using gw = await startGateway({
      NATS_URL: nats.url,
      GATEWAY_API_KEYS_FILE: await writeKeysFile(root),
      GATEWAY_UPLOAD_DIR: join(root, "uploads"),
    });
    const out = join(root, "out");
    const strict = startService(
      "producer",
      producerEnv(nats.url, { OUTPUT_DIR: out, ORGANIZE_BY: "none", ALLOWED_CONTENT_TYPES: "text/csv" }),
    );
    const content = randomBytes(400 * 1024);
    const id = await upload(gw.url, "refused.bin", content);
    const failed = async () =>
      (
        (await (await fetch(`${gw.url}/api/v1/files/${id}/status`, { headers: auth(KEYS.read) })).json()) as {
          state: string;
        }
      ).state === "failed";
    await waitFor(failed, { timeoutMs: 60_000, message: "the file failed (dead-lettered)" });
    await strict.stop();

    await using relaxed = startService("producer", producerEnv(nats.url, { OUTPUT_DIR: out, ORGANIZE_BY: "none" }));
    const res = await fetch(`${gw.url}/api/v1/files/${id}/process`, { method: "POST", headers: auth(KEYS.upload) });
    expect(res.status, await res.clone().text()).toBe(202);
    await waitFor(() => outcomeLines(relaxed).length >= 1, { timeoutMs: 60_000, message: "re-run file written" });
    const written = await listFiles(out);
    expect(written).toHaveLength(1);
    expect(await fileSha(join(out, written[0]!))).toBe(sha256(content));
    await waitFor(
      async () =>
        (
          (await (await fetch(`${gw.url}/api/v1/files/${id}/status`, { headers: auth(KEYS.read) })).json()) as {
            state: string;
          }
        ).state === "delivered",
      { timeoutMs: 30_000, message: "the re-run file delivered" },
    );
    // Its dead letter is gone: a second re-run has nothing left.
    const again = await fetch(`${gw.url}/api/v1/files/${id}/process`, { method: "POST", headers: auth(KEYS.upload) });
    expect(again.status).toBe(409);
  });
});

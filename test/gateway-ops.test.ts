import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { makeTestPki, startNats, startNodeProcess, waitFor } from "./support/index.js";
import { auth, gatewayEntry, KEYS, startGateway, writeKeysFile } from "./gateway-support.js";

// Operations of the built gateway: probes, metrics, OpenAPI, JSON errors, bad configuration, graceful stop.

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "gateway-ops-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("gateway: operations", () => {
  it("serves probes, metrics and OpenAPI at /docs; unknown routes are JSON 404s; SIGTERM exits 0", async () => {
    await using nats = await startNats();
    await using gw = await startGateway({
      NATS_URL: nats.url,
      GATEWAY_API_KEYS_FILE: await writeKeysFile(root),
      GATEWAY_UPLOAD_DIR: join(root, "uploads"),
    });
    for (const path of ["/health", "/healthz", "/readyz"]) {
      const res = await fetch(`${gw.url}${path}`);
      expect(res.status, path).toBe(200);
      expect(await res.json()).toEqual({ status: "ok" });
    }
    const form = new FormData();
    form.append("file", new Blob(["a,b\n"]), "m.csv");
    expect(
      (await fetch(`${gw.url}/api/v1/files/upload`, { method: "POST", headers: auth(KEYS.upload), body: form })).status,
    ).toBe(201);

    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    expect(metrics).toMatch(/filerelay_http_requests_total\{[^}]*route="\/api\/v1\/files\/upload"[^}]*status="201"/);
    expect(metrics).toMatch(/filerelay_upload_bytes_total\{[^}]*api="multipart"[^}]*\} 4\b/);
    expect(metrics).toContain("filerelay_websocket_clients");
    expect(metrics).toContain("filerelay_active_uploads");
    expect(metrics).toMatch(/filerelay_nats_connected\{[^}]*\} 1/);

    const spec = (await (await fetch(`${gw.url}/docs/json`)).json()) as {
      openapi: string;
      paths: Record<string, Record<string, { requestBody?: unknown }>>;
    };
    expect(spec.openapi).toMatch(/^3\./);
    for (const p of [
      "/api/v1/files/upload",
      "/api/v1/files/upload/init",
      "/api/v1/files/upload/{file_id}/chunk",
      "/api/v1/files/upload/{file_id}/complete",
      "/api/v1/files",
      "/api/v1/files/{file_id}",
      "/api/v1/uploads/",
      "/api/v1/uploads/{upload_id}/files",
    ]) {
      expect(Object.keys(spec.paths), p).toContain(p);
    }
    expect(spec.paths["/api/v1/uploads/"]?.post?.requestBody).toBeDefined();
    expect((await fetch(`${gw.url}/docs`, { redirect: "follow" })).status).toBe(200);

    const missing = await fetch(`${gw.url}/nope`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ code: "NOT_FOUND" });
    const badJson = await fetch(`${gw.url}/api/v1/uploads/`, {
      method: "POST",
      headers: { ...auth(KEYS.upload), "content-type": "application/json" },
      body: "{not json",
    });
    expect(badJson.status).toBe(400);
    const text = await badJson.text();
    expect(JSON.parse(text)).toMatchObject({ code: "REQUEST_INVALID" });
    expect(text).not.toMatch(/\.js:\d+/);
    const invalid = await fetch(`${gw.url}/api/v1/files/upload/init`, {
      method: "POST",
      headers: { ...auth(KEYS.upload), "content-type": "application/json" },
      body: JSON.stringify({ filename: "x.csv", size: -1 }),
    });
    expect(invalid.status).toBe(400);
    expect(await invalid.json()).toMatchObject({ code: "REQUEST_INVALID" });

    expect(await gw.stop()).toBe(0);
    expect(gw.logs().some((l) => l.msg === "gateway stopped")).toBe(true);
  });

  it("bad configuration exits 78 naming every bad variable", async () => {
    const keys = join(root, "bad-keys.json");
    await writeFile(keys, JSON.stringify([{ name: "x", role: "root", sha256: "nothex" }]));
    const svc = startNodeProcess("gateway", gatewayEntry, {
      GATEWAY_UPLOAD_DIR: join(root, "uploads"),
      MAX_UPLOAD_SIZE: "lots",
      HTTP_TLS_CERT: "/etc/cert.pem",
      RATE_LIMIT_PER_MINUTE: "-1",
    });
    expect(await svc.exited()).toBe(78);
    for (const name of ["GATEWAY_API_KEYS_FILE", "MAX_UPLOAD_SIZE", "HTTP_TLS_KEY", "RATE_LIMIT_PER_MINUTE"]) {
      expect(svc.stderr()).toContain(name);
    }
    const badKeys = startNodeProcess("gateway", gatewayEntry, {
      GATEWAY_UPLOAD_DIR: join(root, "uploads"),
      GATEWAY_API_KEYS_FILE: keys,
    });
    expect(await badKeys.exited()).toBe(78);
    expect(badKeys.stderr()).toMatch(/GATEWAY_API_KEYS_FILE: 0\.role/);
    expect(badKeys.stderr()).toMatch(/GATEWAY_API_KEYS_FILE: 0\.sha256/);
  });

  it("serves HTTPS with HTTP_TLS_CERT/HTTP_TLS_KEY (curl verifies it against the CA)", async () => {
    await using nats = await startNats();
    await using pki = await makeTestPki();
    await using gw = await startGateway({
      NATS_URL: nats.url,
      GATEWAY_API_KEYS_FILE: await writeKeysFile(root),
      GATEWAY_UPLOAD_DIR: join(root, "uploads"),
      HTTP_TLS_CERT: pki.serverCert,
      HTTP_TLS_KEY: pki.serverKey,
    });
    await writeFile(join(root, "t.csv"), "x,y\n");
    const { stdout } = await promisify(execFile)("curl", [
      "-sS",
      "--cacert",
      pki.caCert,
      "-H",
      `Authorization: Bearer ${KEYS.upload}`,
      "-F",
      `file=@${join(root, "t.csv")}`,
      "-w",
      "\n%{http_code}",
      `https://127.0.0.1:${gw.port}/api/v1/files/upload`,
    ]);
    expect(stdout.trim().split("\n").at(-1)).toBe("201");
    // Plain HTTP on the TLS port gets nowhere.
    await expect(fetch(`http://127.0.0.1:${gw.port}/healthz`)).rejects.toThrow();
  });

  it("removes an abandoned chunked upload after UPLOAD_EXPIRY", async () => {
    await using nats = await startNats();
    await using gw = await startGateway({
      NATS_URL: nats.url,
      GATEWAY_API_KEYS_FILE: await writeKeysFile(root),
      GATEWAY_UPLOAD_DIR: join(root, "uploads"),
      UPLOAD_EXPIRY: "2s",
    });
    const init = await fetch(`${gw.url}/api/v1/files/upload/init`, {
      method: "POST",
      headers: { ...auth(KEYS.upload), "content-type": "application/json" },
      body: JSON.stringify({ filename: "a.bin", size: 2048, chunk_size: 1024 }),
    });
    const plan = (await init.json()) as { file_id: string; upload_id: string };
    const chunk = (n: number) =>
      fetch(`${gw.url}/api/v1/files/upload/${plan.file_id}/chunk?upload_id=${plan.upload_id}&chunk_number=${n}`, {
        method: "PUT",
        headers: { ...auth(KEYS.upload), "content-type": "application/octet-stream" },
        body: Buffer.alloc(1024, n),
      });
    expect((await chunk(1)).status).toBe(200);
    const dir = join(root, "uploads", "chunked", plan.file_id);
    await waitFor(async () => !(await stat(dir).catch(() => undefined)), {
      timeoutMs: 30_000,
      message: "the abandoned upload removed",
    });
    expect((await chunk(2)).status).toBe(404);
    await gw.waitForLog((l) => l.msg === "expired abandoned uploads" && l.uploads === "chunked");
  });
});

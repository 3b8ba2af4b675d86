/**
 * Helpers shared by the gateway integration tests: API key files, starting
 * the built gateway on a fixed port (so a restarted gateway keeps its upload
 * URLs), and authenticated fetch.
 */
import { createHash } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort, startNodeProcess, type RunningService } from "./support/index.js";

export const gatewayEntry = fileURLToPath(new URL("../packages/gateway/dist/main.js", import.meta.url));

export const KEYS = { upload: "upload-key-1234", read: "read-key-5678", admin: "admin-key-9012" } as const;

/** Writes a GATEWAY_API_KEYS_FILE with one key per role (sources ci, viewer, ops). */
export async function writeKeysFile(dir: string): Promise<string> {
  const sha = (k: string) => createHash("sha256").update(k).digest("hex");
  const file = join(dir, "keys.json");
  await writeFile(
    file,
    JSON.stringify([
      { name: "ci", role: "upload", sha256: sha(KEYS.upload) },
      { name: "viewer", role: "read", sha256: sha(KEYS.read) },
      { name: "ops", role: "admin", sha256: sha(KEYS.admin), source: "api" },
    ]),
  );
  return file;
}

export interface Gateway extends RunningService<"gateway"> {
  port: number;
  url: string;
}

/** Starts packages/gateway/dist/main.js on `port` (a free one by default) and waits until it listens. */
export async function startGateway(env: Record<string, string>, port?: number): Promise<Gateway> {
  const p = port ?? (await freePort());
  const svc = startNodeProcess("gateway", gatewayEntry, {
    LOG_LEVEL: "debug",
    HTTP_HOST: "127.0.0.1",
    SHUTDOWN_TIMEOUT_MS: "5000",
    ...env,
    HTTP_PORT: String(p),
  });
  await svc.waitForLog((l) => l.msg === "gateway started", 60_000, "gateway started");
  return Object.assign(svc, { port: p, url: `http://127.0.0.1:${p}` });
}

export function auth(key: string): Record<string, string> {
  return { authorization: `Bearer ${key}` };
}

import { createHash } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { repoRoot, startService, type LogLine, type RunningService, type ServiceName } from "./service.js";
import { waitFor } from "./wait.js";

/**
 * Small helpers shared by the hostile-input, auth, permissions and soak suites.
 */

export const sha256hex = (b: Uint8Array | string): string => createHash("sha256").update(b).digest("hex");

export const consumerReady = (svc: RunningService, timeoutMs = 30_000): Promise<LogLine> =>
  svc.waitForLog((l) => l.msg === "consumer started", timeoutMs, "the consumer to start");

export const producerReady = (svc: RunningService, timeoutMs = 30_000): Promise<LogLine> =>
  svc.waitForLog((l) => l.msg === "consuming files", timeoutMs, "the producer to start consuming");

/** Every regular file under `dir` as { rel, sha256 }, sorted by rel. */
export async function treeHashes(dir: string): Promise<{ rel: string; sha256: string; size: number }[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  const out: { rel: string; sha256: string; size: number }[] = [];
  for (const e of entries) {
    if (!e.isFile()) continue;
    const p = join(e.parentPath, e.name);
    const data = await readFile(p);
    out.push({ rel: p.slice(dir.length + 1), sha256: sha256hex(data), size: data.length });
  }
  return out.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
}

/** Waits until the producer has logged `n` "file written" lines, and returns them. */
export function waitWritten(svc: RunningService, n: number, timeoutMs = 60_000): Promise<LogLine[]> {
  return waitFor(
    () => {
      const lines = svc.logs().filter((l) => l.msg === "file written");
      return lines.length >= n ? lines : undefined;
    },
    { timeoutMs, message: `${n} "file written" lines from the producer` },
  );
}

/** Like startService, but as another user (uid/gid): permission checks then apply, which they do not to root. */
export function startServiceAs(
  name: ServiceName,
  env: Record<string, string | undefined>,
  ids: { uid: number; gid: number },
): RunningService {
  return startService(name, env, ids);
}

/** Everything a service printed (raw JSON lines re-serialized, plus stderr): for "no secret leaked" checks. */
export function allOutput(svc: RunningService): string {
  return `${svc
    .logs()
    .map((l) => JSON.stringify(l))
    .join("\n")}\n${svc.stderr()}`;
}

export { repoRoot, startService };

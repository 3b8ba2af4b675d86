import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { guardChild, waitForExit } from "./processes.js";
import {
  repoRoot,
  serviceEntry,
  startService,
  type LogLine,
  type RunningService,
  type ServiceName,
} from "./service.js";
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

/**
 * Like startService, but as another user (uid/gid): permission checks then
 * apply to the service, which they do not to root.
 */
export function startServiceAs(
  name: ServiceName,
  env: Record<string, string | undefined>,
  ids: { uid: number; gid: number },
): RunningService {
  const fullEnv: Record<string, string> = {
    PATH: process.env.PATH ?? "",
    HOME: "/tmp",
    HTTP_PORT: "0",
    LOG_LEVEL: "debug",
  };
  for (const [k, v] of Object.entries(env)) if (v !== undefined) fullEnv[k] = v;
  const proc = spawn(process.execPath, [serviceEntry(name)], {
    env: fullEnv,
    cwd: "/",
    uid: ids.uid,
    gid: ids.gid,
    stdio: ["ignore", "pipe", "pipe"],
  });
  guardChild(proc);
  return wrapProcess(name, proc);
}

function wrapProcess(name: ServiceName, proc: ReturnType<typeof spawn>): RunningService {
  const lines: LogLine[] = [];
  let partial = "";
  let stderr = "";
  proc.stdout?.on("data", (chunk: Buffer) => {
    partial += chunk.toString("utf8");
    const parts = partial.split("\n");
    partial = parts.pop() ?? "";
    for (const p of parts) {
      if (!p.trim()) continue;
      try {
        lines.push(JSON.parse(p) as LogLine);
      } catch {
        lines.push({ msg: p, level: "raw" });
      }
    }
  });
  proc.stderr?.on("data", (chunk: Buffer) => {
    stderr += chunk.toString("utf8");
  });
  const svc: RunningService = {
    name,
    proc,
    pid: proc.pid ?? -1,
    logs: () => lines,
    stderr: () => stderr,
    waitForLog: (pred, timeoutMs = 30_000, message = "a matching log line") =>
      waitFor(
        () => {
          if (proc.exitCode !== null && !lines.some(pred)) {
            throw new Error(`${name} exited with ${proc.exitCode}: ${stderr.slice(-2000)}`);
          }
          return lines.find(pred);
        },
        { timeoutMs, message: `${name}: ${message}` },
      ),
    stop: async (timeoutMs = 60_000) => {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      proc.kill("SIGTERM");
      return waitForExit(proc, timeoutMs);
    },
    kill: async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill("SIGKILL");
      await waitForExit(proc, 10_000);
    },
    exited: (timeoutMs = 30_000) => waitForExit(proc, timeoutMs),
    [Symbol.asyncDispose]: async () => {
      await svc.kill();
    },
  };
  return svc;
}

/** Everything a service printed (raw JSON lines re-serialized, plus stderr): for "no secret leaked" checks. */
export function allOutput(svc: RunningService): string {
  return `${svc
    .logs()
    .map((l) => JSON.stringify(l))
    .join("\n")}\n${svc.stderr()}`;
}

export { repoRoot, startService };

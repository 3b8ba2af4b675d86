import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { guardChild, waitForExit } from "./processes.js";
import { waitFor } from "./wait.js";

export type ServiceName = "consumer" | "producer";

export const repoRoot = fileURLToPath(new URL("../../", import.meta.url));

export function serviceEntry(name: ServiceName): string {
  return fileURLToPath(new URL(`../../packages/${name}/dist/main.js`, import.meta.url));
}

export interface LogLine {
  level?: string;
  msg?: string;
  [key: string]: unknown;
}

export interface RunningService<N extends string = ServiceName> extends AsyncDisposable {
  name: N;
  proc: ChildProcess;
  pid: number;
  /** Parsed JSON log lines printed so far (stdout). */
  logs(): LogLine[];
  /** Raw stderr so far. */
  stderr(): string;
  /** Waits until a log line satisfies `pred`, returning it. */
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs?: number, message?: string): Promise<LogLine>;
  /** SIGTERM and wait for exit; returns the exit code. */
  stop(timeoutMs?: number): Promise<number | null>;
  /** SIGKILL and wait for exit. */
  kill(): Promise<void>;
  exited(timeoutMs?: number): Promise<number | null>;
}

export interface StartServiceOptions {
  /** Run as another user: permission checks then apply, which they do not to root. */
  uid?: number;
  gid?: number;
}

/**
 * Spawns a built service (`packages/<name>/dist/main.js`) with exactly `env`
 * (plus PATH/HOME, HTTP_PORT=0 and LOG_LEVEL=debug unless given), collecting
 * its JSON log lines. Killed on dispose.
 */
export function startService(
  name: ServiceName,
  env: Record<string, string | undefined>,
  options: StartServiceOptions = {},
): RunningService {
  return startNodeProcess(name, serviceEntry(name), { HTTP_PORT: "0", LOG_LEVEL: "debug", ...env }, options);
}

/** Any built Node entry (a service, an example sink) as a process with its JSON log lines. */
export function startNodeProcess<N extends string>(
  name: N,
  entry: string,
  env: Record<string, string | undefined>,
  options: StartServiceOptions = {},
): RunningService<N> {
  const asOther = options.uid !== undefined;
  const fullEnv: Record<string, string> = {
    PATH: process.env.PATH ?? "",
    HOME: asOther ? "/tmp" : (process.env.HOME ?? "/tmp"),
  };
  for (const [k, v] of Object.entries(env)) if (v !== undefined) fullEnv[k] = v;
  const proc = spawn(process.execPath, [entry], {
    env: fullEnv,
    // Another user may not be able to enter the repository's directory.
    cwd: asOther ? "/" : repoRoot,
    ...(options.uid !== undefined ? { uid: options.uid } : {}),
    ...(options.gid !== undefined ? { gid: options.gid } : {}),
    stdio: ["ignore", "pipe", "pipe"],
  });
  guardChild(proc);
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
  const svc: RunningService<N> = {
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

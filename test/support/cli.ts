import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { guardChild, waitForExit } from "./processes.js";

export const CLI_ENTRY = fileURLToPath(new URL("../../packages/cli/dist/main.js", import.meta.url));

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Spawns the built `filerelay` CLI with exactly `env` (plus PATH/HOME). */
export function spawnCli(args: readonly string[], env: Record<string, string>, cwd: string): ChildProcess {
  return guardChild(
    spawn(process.execPath, [CLI_ENTRY, ...args], {
      cwd,
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    }),
  );
}

/** Runs the CLI to completion in `cwd` (use an empty directory: no stray .env is read). */
export async function runCli(
  args: readonly string[],
  env: Record<string, string>,
  cwd: string,
  timeoutMs = 60_000,
): Promise<CliRun> {
  const child = spawnCli(args, env, cwd);
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (c: Buffer) => (stdout += c.toString("utf8")));
  child.stderr?.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
  const code = await waitForExit(child, timeoutMs);
  return { code, stdout, stderr };
}

/** Runs the CLI with --json and parses its one document; a non-zero exit throws with stderr. */
export async function runCliJson<T>(args: readonly string[], env: Record<string, string>, cwd: string): Promise<T> {
  const run = await runCli([...args, "--json"], env, cwd);
  if (run.code !== 0) throw new Error(`filerelay ${args.join(" ")} exited ${String(run.code)}: ${run.stderr}`);
  return JSON.parse(run.stdout) as T;
}

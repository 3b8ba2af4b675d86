import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const loggerModule = fileURLToPath(new URL("../dist/logger.js", import.meta.url));

/** Runs `script` (ESM) in a child node; resolves with its stdout once `done(stdout)` holds or the child exits. */
function runChild(script: string, done: (out: string) => boolean, timeoutMs: number): Promise<string> {
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  return new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`timed out after ${timeoutMs} ms; stdout so far: ${out}`));
    }, timeoutMs);
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      if (done(out)) {
        clearTimeout(timer);
        child.kill("SIGKILL");
        resolve(out);
      }
    });
    child.on("exit", () => {
      clearTimeout(timer);
      resolve(out);
    });
  });
}

describe("createLogger (buffered stdout)", () => {
  it("a single line reaches stdout on its own while the process keeps running (timer flush)", async () => {
    const out = await runChild(
      `import { createLogger } from ${JSON.stringify(loggerModule)};
       const log = createLogger({ LOG_LEVEL: "info", LOG_PRETTY: false }, { service: "t" });
       log.info({ n: 1 }, "only line");
       setInterval(() => {}, 1000);`,
      (o) => o.includes("only line"),
      10_000,
    );
    expect(out).toContain("only line");
    const line = JSON.parse(out.trim().split("\n")[0]!) as Record<string, unknown>;
    expect(line).toMatchObject({ level: "info", service: "t", msg: "only line", n: 1 });
  });

  it("every buffered line is written when the process exits at once (process.exit)", async () => {
    const out = await runChild(
      `import { createLogger } from ${JSON.stringify(loggerModule)};
       const log = createLogger({ LOG_LEVEL: "info", LOG_PRETTY: false }, { service: "t" });
       for (let i = 0; i < 500; i++) log.info({ i }, "line");
       process.exit(3);`,
      () => false,
      10_000,
    );
    const lines = out.split("\n").filter((l) => l.includes('"msg":"line"'));
    expect(lines).toHaveLength(500);
  });
});

import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { redactSecrets } from "./logger.js";

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

  it("censors secrets one level down in what a line logs, and keeps errors whole", async () => {
    const out = await runChild(
      `import { createLogger } from ${JSON.stringify(loggerModule)};
       const log = createLogger({ LOG_LEVEL: "info", LOG_PRETTY: false }, { service: "t" });
       const err = new Error("boom");
       log.child({ fileId: "f1" }).info(
         { conn: { user: "u", password: "p1" }, config: { NATS_TOKEN: "t1", NATS_PASSWORD: "p2", STREAM: "FILES" }, s3: { secretAccessKey: "k1" }, err },
         "secret line",
       );
       process.exit(0);`,
      () => false,
      10_000,
    );
    for (const secret of ["p1", "t1", "p2", "k1"]) expect(out).not.toContain(`"${secret}"`);
    const line = JSON.parse(out.trim().split("\n")[0]!) as Record<string, Record<string, unknown>>;
    expect(line.conn).toEqual({ user: "u", password: "[redacted]" });
    expect(line.config).toEqual({ NATS_TOKEN: "[redacted]", NATS_PASSWORD: "[redacted]", STREAM: "FILES" });
    expect(line.s3).toEqual({ secretAccessKey: "[redacted]" });
    expect(line.err).toMatchObject({ type: "Error", message: "boom" });
    expect(typeof line.err!.stack).toBe("string");
  });
});

describe("redactSecrets", () => {
  it("returns the same object when nothing is secret, and never changes its input", () => {
    const plain = { fileId: "x", seq: 1, nested: { bytes: 4096 } };
    expect(redactSecrets(plain)).toBe(plain);
    const input = { auth: { token: "t" } };
    expect(redactSecrets(input)).toEqual({ auth: { token: "[redacted]" } });
    expect(input.auth.token).toBe("t");
  });
});

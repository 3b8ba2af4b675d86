import { spawn, spawnSync } from "node:child_process";
import { chmod, chown, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { jetstreamManager } from "@nats-io/jetstream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { connectNats, provision, silentLogger } from "@filerelay/core/internal";
import {
  freePort,
  guardChild,
  repoRoot,
  serviceEntry,
  startNats,
  startService,
  waitFor,
  waitForExit,
  type RunningService,
} from "./support/index.js";
import { createPublisher, listFiles, producerEnv, readDeadLetters, sdkLines, testFile } from "./producer-support.js";

// Services run from packages/*/dist: `pnpm build` first (pnpm test does).

const CLI = fileURLToPath(new URL("../packages/cli/dist/main.js", import.meta.url));
const NOBODY = { uid: 65534, gid: 65534 };
const asRoot = process.getuid?.() === 0;

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "ops-startup-"));
  await chmod(root, 0o755);
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Can uid 65534 run the built services from this checkout? (Not when Node lives under root's 0700 home.) */
function nobodyCanRun(): string | undefined {
  const probe = spawnSync(
    process.execPath,
    ["-e", "require('fs').accessSync(process.argv[1])", serviceEntry("producer")],
    { ...NOBODY, cwd: "/", encoding: "utf8" },
  );
  return probe.status === 0 ? undefined : String(probe.error ?? probe.stderr).slice(0, 200);
}

async function runCli(args: string[], env: Record<string, string>): Promise<{ code: number | null; stderr: string }> {
  const child = guardChild(
    spawn(process.execPath, [CLI, ...args], {
      cwd: root,
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    }),
  );
  let stderr = "";
  child.stderr?.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
  return { code: await waitForExit(child, 60_000), stderr };
}

const consuming = (svc: RunningService) =>
  svc.waitForLog((l) => l.msg === "consuming files", 30_000, "the producer to start consuming");

describe("start-up refuses what cannot work (exit 78, naming the variable)", () => {
  it("a malformed NATS_URL: consumer, producer and CLI exit 78 naming NATS_URL, without trying to connect", async () => {
    for (const bad of ["not a url", "nats://127.0.0.1:notaport", "nats://ok:4222,http://wrong:80"]) {
      const inputDir = await mkdtemp(join(root, "in-"));
      await using consumer = startService("consumer", { NATS_URL: bad, INPUT_DIR: inputDir });
      await using producer = startService("producer", { NATS_URL: bad, OUTPUT_DIR: join(root, "out") });
      const cli = await runCli(["status"], { NATS_URL: bad });
      for (const [name, code, stderr] of [
        ["consumer", await consumer.exited(), consumer.stderr()],
        ["producer", await producer.exited(), producer.stderr()],
        ["cli", cli.code, cli.stderr],
      ] as const) {
        expect(code, `${name} with NATS_URL=${bad}: ${stderr}`).toBe(78);
        expect(stderr, name).toMatch(/NATS_URL: expected/);
      }
      expect(consumer.logs().filter((l) => l.msg === "NATS not reachable yet, retrying")).toEqual([]);
    }
    // --server is checked the same way.
    const flag = await runCli(["status", "--server", "nats://h:99999"], {});
    expect(flag.code).toBe(78);
    expect(flag.stderr).toMatch(/--server \(NATS_URL\): expected a port from 1 to 65535, got "99999"/);
  });

  it("an OUTPUT_DIR that is a file, or under one, or under /proc: the producer exits 78 naming OUTPUT_DIR at once", async () => {
    const file = join(root, "a-file");
    await writeFile(file, "not a directory");
    const cases: [string, RegExp][] = [
      [file, /OUTPUT_DIR: .*a-file is not a directory/],
      [join(file, "out"), /OUTPUT_DIR: .*a-file\/out is not a directory/],
      ["/proc/filerelay-x/out", /OUTPUT_DIR: cannot create \/proc\/filerelay-x\/out as .*\(ENOENT\)/],
    ];
    for (const [dir, message] of cases) {
      if (dir.startsWith("/proc") && !(await import("node:fs")).existsSync("/proc/self")) continue;
      const started = Date.now();
      // No broker at all: the directory is checked before connecting.
      await using svc = startService("producer", { NATS_URL: "nats://127.0.0.1:1", OUTPUT_DIR: dir });
      expect(await svc.exited(20_000), svc.stderr()).toBe(78);
      expect(svc.stderr()).toMatch(message);
      expect(Date.now() - started).toBeLessThan(15_000);
    }
  });

  it("an ERROR_DIR or ARCHIVE_DIR that can never be a directory: producer and consumer exit 78 naming it", async () => {
    const file = join(root, "a-file");
    await writeFile(file, "not a directory");
    const inputDir = await mkdtemp(join(root, "in-"));
    await using producer = startService("producer", {
      NATS_URL: "nats://127.0.0.1:1",
      OUTPUT_DIR: join(root, "out"),
      ERROR_DIR: join(file, "errors"),
    });
    await using consumer = startService("consumer", {
      NATS_URL: "nats://127.0.0.1:1",
      INPUT_DIR: inputDir,
      ARCHIVE_DIR: "/proc/filerelay-x/archive",
      ERROR_DIR: join(file, "errors"),
    });
    expect(await producer.exited(20_000), producer.stderr()).toBe(78);
    expect(producer.stderr()).toMatch(/ERROR_DIR: .*a-file\/errors is not a directory/);
    expect(await consumer.exited(20_000), consumer.stderr()).toBe(78);
    expect(consumer.stderr()).toContain("Invalid configuration (2 problems)");
    expect(consumer.stderr()).toMatch(/ARCHIVE_DIR: cannot create \/proc\/filerelay-x\/archive as .*\(ENOENT\)/);
    expect(consumer.stderr()).toMatch(/ERROR_DIR: .*a-file\/errors is not a directory/);
  });

  it("as uid 65534 with a root-owned OUTPUT_DIR: exit 78 naming OUTPUT_DIR; 10 sent files stay pending, none dead-lettered", async (ctx) => {
    if (!asRoot) ctx.skip("needs root to run the producer as another user");
    const why = nobodyCanRun();
    if (why) ctx.skip(`uid 65534 cannot run the services here: ${why}`);
    await using nats = await startNats();
    await using pub = await createPublisher(nats.url);
    const nc = await connectNats({ NATS_URL: [nats.url] }, { name: "test", log: silentLogger() });
    try {
      // What the consumer does at start-up (SINK_GROUPS): the group exists before any producer.
      await provision(
        nc,
        { STREAM: "FILES", SUBJECT: "files.input", STREAM_REPLICAS: 1 },
        { log: silentLogger(), groups: ["file-producers"] },
      );
      const files = Array.from({ length: 10 }, (_, i) => testFile(`sent/${i}.txt`, `file ${i}\n`));
      for (const f of files) await pub.publish(f);

      const out = join(root, "out");
      await mkdir(out, { mode: 0o755 }); // root-owned: the forgotten chown
      await using svc = startService("producer", producerEnv(nats.url, { OUTPUT_DIR: out, MAX_DELIVER: "1" }), NOBODY);
      expect(await svc.exited(), svc.stderr()).toBe(78);
      expect(svc.stderr()).toContain(`OUTPUT_DIR: ${out} is not writable by uid 65534 gid 65534 (EACCES`);

      const jsm = await jetstreamManager(nc);
      const group = await jsm.consumers.info("FILES", "file-producers");
      expect([group.num_pending, group.num_ack_pending, group.num_redelivered]).toEqual([10, 0, 0]);
      expect((await jsm.streams.info("FILES_DLQ")).state.messages).toBe(0);

      // Fixed (chown), the same producer delivers every one.
      await chown(out, NOBODY.uid, NOBODY.gid);
      await using _fixed = startService(
        "producer",
        producerEnv(nats.url, { OUTPUT_DIR: out, ORGANIZE_BY: "none" }),
        NOBODY,
      );
      await waitFor(async () => ((await listFiles(out)).length === 10 ? true : undefined), {
        timeoutMs: 60_000,
        message: "10 files written once OUTPUT_DIR is writable",
      });
      expect(await readDeadLetters(nc, "file-producers")).toEqual([]);
    } finally {
      await nc.close();
    }
  });

  it("an OUTPUT_DIR that stops accepting writes while running: the producer stops pulling, /readyz 503 naming OUTPUT_DIR, nothing dead-lettered; lands once fixed", async (ctx) => {
    // As root, permissions do not apply: run as nobody there, or as ourselves otherwise.
    const why = asRoot ? nobodyCanRun() : undefined;
    if (why) ctx.skip(`uid 65534 cannot run the services here: ${why}`);
    await using nats = await startNats();
    await using pub = await createPublisher(nats.url);
    const out = join(root, "out");
    await mkdir(out);
    if (asRoot) await chown(out, NOBODY.uid, NOBODY.gid);
    const port = await freePort();
    const env = producerEnv(nats.url, {
      OUTPUT_DIR: out,
      ORGANIZE_BY: "none",
      MAX_DELIVER: "2",
      RETRY_BACKOFF_MS: "100",
      CONCURRENCY: "2",
      LARGE_FILE_CONCURRENCY: "1",
      HTTP_PORT: String(port),
    });
    await using svc = asRoot ? startService("producer", env, NOBODY) : startService("producer", env);
    await consuming(svc);
    const readyz = async () => {
      const res = await fetch(`http://127.0.0.1:${port}/readyz`);
      return { status: res.status, body: await res.text() };
    };
    expect((await readyz()).status).toBe(200);

    // The volume loses its permissions (re-created root-owned, or made read-only).
    if (asRoot) await chown(out, 0, 0);
    else await chmod(out, 0o555);
    const files = Array.from({ length: 10 }, (_, i) => testFile(`late/${i}.txt`, `late ${i}\n`));
    for (const f of files) await pub.publish(f);

    // The first failures close the gate; from then on one delivery probes every 2 s and the others wait.
    const refusals = () => sdkLines(svc, "retry").filter((l) => l.code === "OUTPUT_NOT_WRITABLE");
    await svc.waitForLog((l) => l.msg === "output refuses writes; pausing", 30_000, "the producer to pause");
    await waitFor(() => refusals().length >= 4, { timeoutMs: 30_000, message: "two probes after the first failures" });
    // Stopped pulling: with CONCURRENCY=2, most of the 10 envelopes were never even delivered.
    const jsm = await jetstreamManager(pub.nc);
    const group = await jsm.consumers.info("FILES", "file-producers");
    expect(group.num_pending, JSON.stringify(group)).toBeGreaterThanOrEqual(3);
    expect(refusals().length).toBeLessThan(10);
    const notReady = await readyz();
    expect(notReady.status).toBe(503);
    expect(notReady.body).toContain(`OUTPUT_DIR ${out} is not writable`);
    expect(sdkLines(svc, "dead-lettered")).toEqual([]);
    expect(await readDeadLetters(pub.nc, "file-producers")).toEqual([]);

    // Fixed: the next probe succeeds, every file lands, and the producer is ready again.
    if (asRoot) await chown(out, NOBODY.uid, NOBODY.gid);
    else await chmod(out, 0o755);
    await waitFor(async () => ((await listFiles(out)).length === files.length ? true : undefined), {
      timeoutMs: 60_000,
      message: "the 10 files written once OUTPUT_DIR is writable again",
    });
    await waitFor(async () => ((await readyz()).status === 200 ? true : undefined), {
      message: "/readyz 200 again",
    });
    expect(await readDeadLetters(pub.nc, "file-producers")).toEqual([]);
    // SIGTERM still stops it promptly.
    expect(await svc.stop()).toBe(0);
  });
});

describe("runService: a hard deadline after SIGTERM", () => {
  it("a start-up step that never settles (recursive mkdir under /proc) still exits non-zero within SHUTDOWN_TIMEOUT_MS + 5 s", async (ctx) => {
    if (!(await import("node:fs")).existsSync("/proc/self")) ctx.skip("no /proc here");
    // A service whose start-up is stuck in Node's recursive mkdir, which never settles under /proc.
    const script = join(root, "stuck-service.mjs");
    const core = join(repoRoot, "packages/core/dist/internal.js");
    await writeFile(
      script,
      `import { mkdir } from "node:fs/promises";
import { runService } from ${JSON.stringify(core)};
runService("stuck", async ({ setShutdownTimeout }) => {
  setShutdownTimeout(Number(process.env.SHUTDOWN_TIMEOUT_MS));
  process.stdout.write("starting\\n");
  await mkdir("/proc/filerelay-stuck/a/b", { recursive: true });
});
`,
    );
    const child = guardChild(
      spawn(process.execPath, [script], {
        env: { PATH: process.env.PATH ?? "", SHUTDOWN_TIMEOUT_MS: "1000" },
        stdio: ["ignore", "pipe", "pipe"],
      }),
    );
    let stdout = "";
    let stderr = "";
    child.stdout?.on("data", (c: Buffer) => (stdout += c.toString("utf8")));
    child.stderr?.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
    await waitFor(() => stdout.includes("starting"), { message: "the stuck service to start" });
    const signalled = Date.now();
    child.kill("SIGTERM");
    const code = await waitForExit(child, 30_000);
    const tookMs = Date.now() - signalled;
    expect(code).not.toBe(0);
    expect(code).not.toBeNull();
    expect(tookMs).toBeLessThan(1000 + 5000);
    expect(tookMs).toBeGreaterThanOrEqual(1000);
    expect(stderr).toMatch(/stuck: still stopping 4000 ms after SIGTERM; exiting now/);
  });
});

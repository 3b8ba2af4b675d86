#!/usr/bin/env node
// `pnpm demo`: builds if needed, then relays ./demo/input → ./demo/output with
// one consumer and one producer (archive ./demo/archive, errors ./demo/error;
// DEMO_DIR moves the whole tree). Starts its own nats-server on a free port
// with a temporary store, unless NATS_URL names one. Its JetStream objects have
// their own names (stream DEMO, subject demo.input, group demo-producers), so
// it never joins or drains a deployment on the same server. Drops a few sample
// files, prints where each one lands, and keeps running until Ctrl-C.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { accessSync, constants, createWriteStream } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join, relative, resolve } from "node:path";
import process from "node:process";
import { clearTimeout, setTimeout } from "node:timers";
import { fileURLToPath, URL } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const demo = process.env.DEMO_DIR ? resolve(process.env.DEMO_DIR) : join(root, "demo");
/** The demo's own JetStream names: never the defaults (FILES, files.input, file-producers) of a real deployment. */
const names = { STREAM: "DEMO", SUBJECT: "demo.input", GROUP: "demo-producers", SOURCE: "demo" };
const dirs = {
  input: join(demo, "input"),
  output: join(demo, "output"),
  archive: join(demo, "archive"),
  error: join(demo, "error"),
  logs: join(demo, "logs"),
};
const say = (text) => process.stdout.write(`${text}\n`);
const show = (p) => relative(process.cwd(), p) || ".";

/** @type {{ name: string; proc: import("node:child_process").ChildProcess }[]} */
const children = [];
let stopping = false;

async function main() {
  await build();
  for (const d of Object.values(dirs)) await mkdir(d, { recursive: true });
  const natsUrl = await ensureNats();

  const common = {
    NATS_URL: natsUrl,
    LOG_LEVEL: "info",
    STREAM: names.STREAM,
    SUBJECT: names.SUBJECT,
    // The demo's files, not a copy of the environment's: a shell's STREAM or SUBJECT must not leak in.
    PRODUCER_GROUP: names.GROUP,
  };
  const ports = { consumer: await portOr(9464), producer: await portOr(9465) };
  const consumer = startChild("consumer", join(root, "packages/consumer/dist/main.js"), {
    ...common,
    INPUT_DIR: dirs.input,
    ARCHIVE_DIR: dirs.archive,
    ERROR_DIR: dirs.error,
    SOURCE: names.SOURCE,
    SINK_GROUPS: names.GROUP,
    STABILITY_MS: "500",
    POLL_INTERVAL_MS: "2000",
    HTTP_PORT: String(ports.consumer.port),
  });
  const producer = startChild("producer", join(root, "packages/producer/dist/main.js"), {
    ...common,
    OUTPUT_DIR: dirs.output,
    ERROR_DIR: dirs.error,
    HTTP_PORT: String(ports.producer.port),
  });
  await Promise.all([consumer.started("consumer started"), producer.started("consuming files")]);

  say(`\nfilerelay demo: ${show(dirs.input)} → NATS (${natsUrl}) → ${show(dirs.output)}`);
  say(`  stream ${names.STREAM}, subject ${names.SUBJECT}, group ${names.GROUP} (not a deployment's defaults)`);
  say(`  archive: ${show(dirs.archive)}   errors: ${show(dirs.error)}   logs: ${show(dirs.logs)}`);
  for (const [name, p] of Object.entries(ports)) {
    say(
      p.port > 0
        ? `  ${name}: http://127.0.0.1:${p.port}/healthz  /readyz  /metrics`
        : `  ${name}: no health/metrics endpoint (port ${p.wanted} is busy)`,
    );
  }
  say(`  CLI: pnpm exec filerelay status --server ${natsUrl} --stream ${names.STREAM} --subject ${names.SUBJECT}\n`);
  const samples = await dropSamples();
  say(`dropped ${samples.length} sample files into ${show(dirs.input)}:`);
  await producer.landed(samples.length);
  say(`\nDrop your own files into ${show(dirs.input)}; each one is printed here when it lands. Ctrl-C stops.\n`);
}

/** tsc -b is incremental: nearly instant when dist/ is up to date. */
async function build() {
  const tsc = join(root, "node_modules/typescript/bin/tsc");
  try {
    accessSync(tsc);
  } catch {
    fail("dependencies are missing: run `. scripts/env.sh` (or `pnpm install`) first.");
  }
  say("building (tsc -b)…");
  const code = await new Promise((resolve) => {
    const p = spawn(process.execPath, [tsc, "-b", "tsconfig.build.json"], { cwd: root, stdio: "inherit" });
    p.on("exit", resolve);
  });
  if (code !== 0) fail("the build failed (see above).");
}

async function ensureNats() {
  if (process.env.NATS_URL) {
    say(`using NATS_URL=${process.env.NATS_URL}`);
    await refuseSharedDeadLetters(process.env.NATS_URL);
    return process.env.NATS_URL;
  }
  const bin = findNatsServer();
  if (!bin) {
    fail(
      "nats-server is not installed: install it (Debian/Ubuntu: `sudo apt-get install nats-server`, macOS: `brew install nats-server`, or a release from https://github.com/nats-io/nats-server/releases) or set NATS_URL to a JetStream-enabled server.",
    );
  }
  // Never whatever answers on 4222: that may be a real deployment (the compose stack publishes it).
  const port = (await portOr(0)).port;
  const store = await mkdtemp(join(tmpdir(), "filerelay-demo-nats-"));
  say(`starting the demo's own nats-server on 127.0.0.1:${port} (JetStream, temporary store ${store})`);
  const nats = startChild("nats-server", bin, {}, ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", store]);
  nats.cleanup = () => rm(store, { recursive: true, force: true });
  for (let i = 0; i < 100 && !(await answers(port)); i++) await new Promise((r) => setTimeout(r, 100));
  if (!(await answers(port)))
    fail(`the demo's nats-server did not start; see ${show(join(dirs.logs, "nats-server.log"))}`);
  return `nats://127.0.0.1:${port}`;
}

/**
 * Every filerelay deployment's dead-letter stream captures filerelay.dlq.>, so
 * two cannot coexist on one server: rather than fail half-way (or dead-letter
 * into another deployment's stream), the demo refuses such a server up front.
 */
async function refuseSharedDeadLetters(url) {
  const { connect } = await import("@nats-io/transport-node");
  const { jetstreamManager } = await import("@nats-io/jetstream");
  let nc;
  try {
    nc = await connect({ servers: url.split(",").map((u) => u.trim()), timeout: 5000 });
  } catch (err) {
    fail(`cannot connect to NATS_URL ${url}: ${err?.message ?? err}`);
  }
  try {
    const jsm = await jetstreamManager(nc);
    const owner = await jsm.streams.find("filerelay.dlq.demo-producers").catch(() => undefined);
    if (owner && owner !== `${names.STREAM}_DLQ`) {
      fail(
        `NATS_URL ${url} already holds another filerelay deployment (its dead-letter stream ${owner} owns filerelay.dlq.>); the demo leaves it alone. Unset NATS_URL to let the demo start its own server.`,
      );
    }
  } finally {
    await nc.close();
  }
}

function findNatsServer() {
  const path = [...(process.env.PATH ?? "").split(delimiter), "/usr/sbin", "/usr/local/sbin", "/usr/local/bin"];
  for (const dir of path) {
    const candidate = join(dir, "nats-server");
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      /* keep looking */
    }
  }
  return undefined;
}

function answers(port) {
  return new Promise((resolve) => {
    const s = connect({ host: "127.0.0.1", port });
    s.setTimeout(1000);
    s.once("connect", () => (s.destroy(), resolve(true)));
    s.once("timeout", () => (s.destroy(), resolve(false)));
    s.once("error", () => resolve(false));
  });
}

/** `wanted` when it is free (0: any free port), else port 0 (the service then serves no HTTP endpoint). */
function portOr(wanted) {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once("error", () => resolve({ wanted, port: 0 }));
    srv.listen(wanted, wanted === 0 ? "127.0.0.1" : "0.0.0.0", () => {
      const port = srv.address().port;
      srv.close(() => resolve({ wanted, port }));
    });
  });
}

/**
 * Spawns a child in its own process group (so Ctrl-C reaches only this script,
 * which then stops the services before the broker), logging to demo/logs.
 */
function startChild(name, file, env, args = []) {
  const isNode = file.endsWith(".js");
  const proc = spawn(isNode ? process.execPath : file, isNode ? [file, ...args] : args, {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  const log = createWriteStream(join(dirs.logs, `${name}.log`), { flags: "a" });
  const waiters = [];
  let landed = 0;
  let partial = "";
  let stderr = "";
  proc.stdout.on("data", (chunk) => {
    log.write(chunk);
    partial += chunk.toString("utf8");
    const lines = partial.split("\n");
    partial = lines.pop() ?? "";
    for (const text of lines) {
      let line;
      try {
        line = JSON.parse(text);
      } catch {
        continue;
      }
      onLogLine(name, line, () => landed++);
      for (const w of [...waiters]) if (w.test(line, landed)) waiters.splice(waiters.indexOf(w), 1);
    }
  });
  proc.stderr.on("data", (chunk) => {
    log.write(chunk);
    stderr += chunk.toString("utf8");
  });
  const child = { name, proc, cleanup: undefined };
  children.push(child);
  proc.on("exit", (code, signal) => {
    if (stopping) return;
    say(
      `\n${name} exited unexpectedly (${signal ?? `code ${code}`}):\n${stderr.trim().split("\n").slice(-8).join("\n")}`,
    );
    void shutdown(1);
  });
  const waitFor = (test) => new Promise((resolve) => waiters.push({ test: (l, n) => test(l, n) && (resolve(), true) }));
  return Object.assign(child, {
    started: (msg) => waitFor((l) => l.msg === msg),
    landed: (n) => waitFor((_l, count) => count >= n),
  });
}

function onLogLine(name, line, countLanded) {
  if (name === "producer" && typeof line.location === "string" && typeof line.outcome === "string") {
    countLanded();
    const verb = line.outcome === "written" ? "→" : `→ (${line.outcome})`;
    // Files the demo's consumer published come from its input directory; others (`filerelay send`) say their source.
    const origin = line.source === names.SOURCE ? show(join(dirs.input, line.path)) : `${line.source}:${line.path}`;
    say(`  ${origin} ${verb} ${show(line.location)}  [${line.size} bytes, ${line.durationMs} ms]`);
  } else if (name === "producer" && line.outcome === "dead-lettered") {
    say(`  ${line.path ?? line.fileId} dead-lettered [${line.code}]: ${line.err}`);
  } else if ((line.level === "warn" || line.level === "error" || line.level === "fatal") && line.msg) {
    say(
      `  [${name} ${line.level}] ${line.msg}${line.err ? `: ${typeof line.err === "string" ? line.err : line.err.message}` : ""}`,
    );
  }
}

async function dropSamples() {
  const stamp = new Date().toISOString();
  const samples = {
    "hello.txt": `Hello from filerelay, ${stamp}\n`,
    "reports/sales.csv": `region,amount\nnorth,${Math.floor(Math.random() * 1000)}\nsouth,42\n`,
    "notes/todo.md": `# Demo\n\n- written ${stamp}\n`,
    // Above the 256 KiB inline limit: travels through the JetStream Object Store.
    "images/big-sample.bin": randomBytes(1024 * 1024 + 17),
  };
  for (const [rel, content] of Object.entries(samples)) {
    const file = join(dirs.input, rel);
    await mkdir(join(file, ".."), { recursive: true });
    await writeFile(file, content);
  }
  return Object.keys(samples);
}

async function shutdown(code) {
  if (stopping) return;
  stopping = true;
  say(code === 0 ? "\nstopping (Ctrl-C)…" : "\nstopping…");
  // Services first (they drain and ack), the broker last.
  const services = children.filter((c) => c.name !== "nats-server");
  await Promise.all(services.map((c) => stop(c.proc, 20_000)));
  for (const c of children.filter((c) => c.name === "nats-server")) await stop(c.proc, 10_000);
  for (const c of children) await c.cleanup?.();
  say("stopped.");
  process.exit(code);
}

function stop(proc, timeoutMs) {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
    proc.once("exit", () => (clearTimeout(timer), resolve()));
    proc.kill("SIGTERM");
  });
}

function fail(message) {
  process.stderr.write(`demo: ${message}\n`);
  if (children.length > 0) void shutdown(1);
  else process.exit(1);
  throw new Error(message);
}

process.on("SIGINT", () => void shutdown(0));
process.on("SIGTERM", () => void shutdown(0));
process.on("exit", () => {
  for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill("SIGKILL");
});
main().catch((err) => {
  if (!stopping) {
    process.stderr.write(`demo: ${err?.message ?? err}\n`);
    void shutdown(1);
  }
});

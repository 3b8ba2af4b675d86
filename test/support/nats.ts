import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { guardChild, waitForExit } from "./processes.js";
import { freePort } from "./ports.js";
import { waitFor } from "./wait.js";

export interface StartNatsOptions {
  user?: string;
  password?: string;
  token?: string;
  /** Extra nats-server command-line arguments. */
  args?: string[];
  /** Contents of a nats-server config file (passed with -c). */
  config?: string;
  /** Cluster wiring (used by startNatsCluster). */
  cluster?: { name: string; port: number; routes: number[]; serverName: string };
}

export interface NatsServer extends AsyncDisposable {
  /** Client URL, e.g. nats://127.0.0.1:4321 (no credentials in it). */
  url: string;
  port: number;
  monitorUrl: string;
  /** False for an external server (FILERELAY_TEST_NATS_URL / Docker): kill and restart then throw. */
  controllable: boolean;
  pid(): number | undefined;
  /** Graceful stop (SIGTERM), waits for exit. */
  stop(): Promise<void>;
  /** Sends a signal (default SIGKILL) and waits for exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /**
   * Starts again on the same port with the same store, so JetStream state
   * survives; resolves once /healthz answers ok (for a cluster member: once it
   * has rejoined and caught up, which needs a quorum of its peers to be up).
   */
  restart(): Promise<void>;
  /** What the server printed (most recent 200 lines). */
  output(): string;
}

export function findNatsServer(): string | undefined {
  const dirs = [...(process.env.PATH ?? "").split(delimiter), "/usr/sbin", "/usr/local/sbin", "/usr/bin"];
  for (const dir of dirs) {
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

const NO_SERVER =
  "nats-server was not found on PATH: install it (Debian/Ubuntu: `apt-get install nats-server`), or set FILERELAY_TEST_NATS_URL to a running JetStream server, or FILERELAY_TEST_DOCKER=1 where a Docker engine runs.";

/**
 * Starts a throwaway JetStream server on free loopback ports with a temporary
 * store, and resolves once its monitor's /healthz answers ok.
 */
export async function startNats(options: StartNatsOptions = {}): Promise<NatsServer> {
  const external = process.env.FILERELAY_TEST_NATS_URL;
  if (external && !options.cluster && !options.user && !options.token && !options.config)
    return externalServer(external);
  if (process.env.FILERELAY_TEST_DOCKER === "1") return dockerServer();
  const bin = findNatsServer();
  if (!bin) throw new Error(NO_SERVER);

  const port = await freePort();
  const monitorPort = await freePort();
  const storeDir = await mkdtemp(join(tmpdir(), "filerelay-nats-"));
  const args = ["-a", "127.0.0.1", "-p", String(port), "-m", String(monitorPort), "-js", "-sd", storeDir];
  if (options.config) {
    const confFile = join(storeDir, "server.conf");
    await writeFile(confFile, options.config);
    args.push("-c", confFile);
  }
  if (options.user) args.push("--user", options.user, "--pass", options.password ?? "");
  if (options.token) args.push("--auth", options.token);
  if (options.cluster) {
    const c = options.cluster;
    args.push("-n", c.serverName, "--cluster_name", c.name, "--cluster", `nats://127.0.0.1:${c.port}`);
    args.push("--routes", c.routes.map((p) => `nats://127.0.0.1:${p}`).join(","));
  }
  args.push(...(options.args ?? []));

  let child: ChildProcess | undefined;
  let lines: string[] = [];
  const monitorUrl = `http://127.0.0.1:${monitorPort}`;

  const launch = async (waitHealthy: boolean) => {
    const proc = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] });
    guardChild(proc);
    const collect = (chunk: Buffer) => {
      lines.push(...chunk.toString("utf8").split("\n").filter(Boolean));
      if (lines.length > 400) lines = lines.slice(-200);
    };
    proc.stdout?.on("data", collect);
    proc.stderr?.on("data", collect);
    child = proc;
    if (!waitHealthy) return;
    await waitFor(
      async () => {
        if (proc.exitCode !== null)
          throw new Error(`nats-server exited with ${proc.exitCode}: ${lines.slice(-5).join(" | ")}`);
        const res = await fetch(`${monitorUrl}/healthz`);
        return res.ok;
      },
      { timeoutMs: options.cluster ? 60_000 : 20_000, message: `nats-server on port ${port} to become healthy` },
    );
  };
  // Cluster members only report healthy once peers are up: the cluster helper waits instead.
  await launch(!options.cluster);

  const kill = async (signal: NodeJS.Signals = "SIGKILL") => {
    const proc = child;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill(signal);
    await waitForExit(proc, 30_000);
  };
  const server: NatsServer = {
    url: `nats://127.0.0.1:${port}`,
    port,
    monitorUrl,
    controllable: true,
    pid: () => child?.pid,
    stop: () => kill("SIGTERM"),
    kill,
    restart: async () => {
      await kill("SIGKILL");
      // A cluster member is healthy only once it has rejoined its peers and
      // caught up (meta + every stream/consumer current): wait for exactly that.
      await launch(true);
    },
    output: () => lines.join("\n"),
    [Symbol.asyncDispose]: async () => {
      await kill("SIGKILL");
      await rm(storeDir, { recursive: true, force: true });
    },
  };
  return server;
}

function notControllable(what: string): () => Promise<void> {
  return () => Promise.reject(new Error(`${what} needs a nats-server started by the test harness`));
}

function externalServer(url: string): NatsServer {
  return {
    url,
    port: Number(new URL(url.replace(/^nats:/, "http:")).port || 4222),
    monitorUrl: "",
    controllable: false,
    pid: () => undefined,
    stop: () => Promise.resolve(),
    kill: notControllable("kill()"),
    restart: notControllable("restart()"),
    output: () => "",
    [Symbol.asyncDispose]: () => Promise.resolve(),
  };
}

async function dockerServer(): Promise<NatsServer> {
  // Only where a Docker engine answers; CI uses the local binary.
  const { NatsContainer } = await import("@testcontainers/nats");
  const container = await new NatsContainer("nats:2.10-alpine").withJetStream().start();
  const url = `nats://${container.getHost()}:${container.getMappedPort(4222)}`;
  return {
    ...externalServer(url),
    [Symbol.asyncDispose]: async () => {
      await container.stop();
    },
  };
}

export interface NatsCluster extends AsyncDisposable {
  servers: NatsServer[];
  /** Comma-separated client URLs of every node (a NATS_URL value). */
  url: string;
}

/** A JetStream cluster of `size` nodes with routes on loopback. */
export async function startNatsCluster(size = 3): Promise<NatsCluster> {
  const clusterPorts = await Promise.all(Array.from({ length: size }, () => freePort()));
  const name = `c${process.pid}`;
  const servers: NatsServer[] = [];
  for (let i = 0; i < size; i++) {
    servers.push(
      await startNats({
        cluster: {
          name,
          port: clusterPorts[i]!,
          routes: clusterPorts.filter((_, j) => j !== i),
          serverName: `n${i + 1}`,
        },
      }),
    );
  }
  await waitFor(
    async () => {
      for (const s of servers) {
        const res = await fetch(`${s.monitorUrl}/healthz`);
        if (!res.ok) return false;
      }
      return true;
    },
    { timeoutMs: 60_000, message: `a ${size}-node JetStream cluster to become healthy` },
  );
  return {
    servers,
    url: servers.map((s) => s.url).join(","),
    [Symbol.asyncDispose]: async () => {
      await Promise.all(servers.map((s) => s[Symbol.asyncDispose]()));
    },
  };
}

import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join, posix } from "node:path";
import { jetstreamManager, StorageType } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { parse } from "yaml";
import type { z } from "zod";
import { describe, expect, it } from "vitest";
import { consumerEnvSchema } from "../packages/consumer/src/config.js";
import { producerEnvSchema } from "../packages/producer/src/config.js";
import { batcherEnvSchema } from "../packages/batcher/src/config.js";
import { gatewayEnvSchema } from "../packages/gateway/src/config.js";
import { transformerEnvSchema } from "../packages/transformer/src/config.js";
import {
  findNatsServer,
  freePort,
  guardChild,
  repoRoot,
  startNats,
  startService,
  waitFor,
  waitForExit,
} from "./support/index.js";
import { startTransformer, transformerReady } from "./transformer-support.js";

/**
 * `docker compose config` is not available here, so docker-compose.yml and the
 * 3-node override are parsed and checked: images, ports, health checks,
 * restart policies, volumes, and every filerelay service's environment
 * validated by the services' own zod schemas. The override's NATS command
 * lines are also started for real as a local cluster.
 */

interface ComposeService {
  image?: string;
  build?: { context: string; dockerfile: string; target: string };
  command?: string | string[];
  environment?: Record<string, string | number | boolean>;
  ports?: string[];
  volumes?: string[];
  healthcheck?: { test: string[]; interval?: string };
  depends_on?: Record<string, { condition: string }>;
  restart?: string;
  stop_grace_period?: string;
}
interface ComposeFile {
  services: Record<string, ComposeService>;
  volumes?: Record<string, unknown>;
}

async function loadCompose(path: string): Promise<ComposeFile> {
  // merge: true resolves the `<<: *anchor` keys compose files use.
  return parse(await readFile(join(repoRoot, path), "utf8"), { merge: true }) as ComposeFile;
}

/** Compose's merge rules for the keys the override uses: maps merge by key, the rest is replaced. */
function mergeCompose(base: ComposeFile, override: ComposeFile): ComposeFile {
  const services: Record<string, ComposeService> = { ...base.services };
  for (const [name, o] of Object.entries(override.services)) {
    const b = services[name] ?? {};
    services[name] = {
      ...b,
      ...o,
      environment: { ...b.environment, ...o.environment },
      depends_on: { ...b.depends_on, ...o.depends_on },
    };
  }
  return { services, volumes: { ...base.volumes, ...override.volumes } };
}

const envOf = (s: ComposeService): Record<string, string> =>
  Object.fromEntries(Object.entries(s.environment ?? {}).map(([k, v]) => [k, String(v)]));

const schemas = {
  consumer: consumerEnvSchema,
  producer: producerEnvSchema,
  batcher: batcherEnvSchema,
  gateway: gatewayEnvSchema,
  transformer: transformerEnvSchema,
} as const;
type Kind = keyof typeof schemas;
/** The standard AWS credential chain: the only non-filerelay variables a producer reads. */
const AWS_VARIABLES = new Set(["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"]);

function filerelayServices(file: ComposeFile): [string, ComposeService, Kind][] {
  return Object.entries(file.services)
    .filter(([, s]) => s.build?.dockerfile === "deploy/Dockerfile")
    .map(([name, s]) => [name, s, s.build!.target as Kind]);
}

/** Host path of a container path, through the service's bind mounts (longest match wins). */
function hostPath(s: ComposeService, containerPath: string): string | undefined {
  let best: { host: string; target: string } | undefined;
  for (const v of s.volumes ?? []) {
    const [host, target] = v.split(":");
    if (!host?.startsWith("./") || !target) continue;
    const inside = containerPath === target || containerPath.startsWith(`${target}/`);
    if (inside && (!best || target.length > best.target.length)) best = { host, target };
  }
  return best && posix.join(best.host, posix.relative(best.target, containerPath));
}

const httpCheckPort = (s: ComposeService): string | undefined =>
  /http:\/\/127\.0\.0\.1:(\d+)\/(healthz|readyz)/.exec(s.healthcheck?.test.join(" ") ?? "")?.[1];

function argValue(args: string[], flag: string): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === flag || a === `-${flag}`) return args[i + 1];
    for (const prefix of [`${flag}=`, `-${flag}=`]) if (a.startsWith(prefix)) return a.slice(prefix.length);
  }
  return undefined;
}
const argv = (c: ComposeService["command"]): string[] => (Array.isArray(c) ? c : (c ?? "").split(/\s+/));

/** What every filerelay service of a compose file needs: a valid environment, its port, health check, restart policy and grace period. */
function checkFilerelayServices(file: ComposeFile): void {
  for (const [name, s, kind] of filerelayServices(file)) {
    expect(s.build?.context).toBe(".");
    expect(s.image).toMatch(new RegExp(`^filerelay/${kind}:`));
    const env = envOf(s);
    const schema = schemas[kind];
    const known = new Set(Object.keys(schema.shape));
    for (const key of Object.keys(env)) {
      const ok = known.has(key) || (kind === "producer" && AWS_VARIABLES.has(key));
      expect(ok, `${name}: ${key} is not a ${kind} variable`).toBe(true);
      if (known.has(key)) expect(env[key], `${name}: ${key} must not need interpolation`).not.toContain("${");
    }
    const parsed = schema.safeParse(Object.fromEntries(Object.entries(env).filter(([k]) => known.has(k))));
    expect(parsed.error?.issues ?? [], `${name}'s environment`).toEqual([]);
    const port = String(parsed.data!.HTTP_PORT);
    expect(port).toBe(String(schema.shape.HTTP_PORT.parse(undefined)));
    expect(
      s.ports?.some((p) => p.endsWith(`:${port}`)),
      `${name} publishes ${port}`,
    ).toBe(true);
    expect(httpCheckPort(s), `${name} health check port`).toBe(port);
    expect(s.restart).toBe("unless-stopped");
    expect(s.depends_on?.nats).toEqual({ condition: "service_healthy" });
    // Docker's SIGKILL must not cut a graceful stop short.
    const grace = Number(/^(\d+)s$/.exec(s.stop_grace_period ?? "")?.[1]);
    expect(grace * 1000).toBeGreaterThan(parsed.data!.SHUTDOWN_TIMEOUT_MS);
  }
}

describe("docker-compose.yml", () => {
  it("runs NATS 2.10 with JetStream, its monitor port and a health check", async () => {
    const { services } = await loadCompose("docker-compose.yml");
    const nats = services.nats!;
    expect(nats.image).toMatch(/^nats:2\.10(\.\d+)?(-alpine)?$/);
    const args = argv(nats.command);
    expect(args).toContain("-js");
    expect(argValue(args, "-sd")).toBe("/data");
    expect(argValue(args, "-m")).toBe("8222");
    expect(nats.ports).toEqual(expect.arrayContaining(["4222:4222", "8222:8222"]));
    expect(nats.healthcheck?.test.join(" ")).toContain("http://127.0.0.1:8222/healthz");
    expect(nats.restart).toBe("unless-stopped");
  });

  it("creates the s3 producer's bucket in MinIO before the producer starts", async () => {
    const { services } = await loadCompose("docker-compose.yml");
    expect(services.minio!.image).toMatch(/^minio\/minio:/);
    expect(services.minio!.healthcheck).toBeDefined();
    const init = services["minio-init"]!;
    expect(init.image).toMatch(/^minio\/mc:/);
    expect(init.depends_on).toEqual({ minio: { condition: "service_healthy" } });
    expect(init.restart).toBe("no");
    expect(argv(init.command).join(" ")).toMatch(/mc mb --ignore-existing "local\/\$\$BUCKET"/);
    const s3 = Object.values(services).filter((s) => envOf(s).SINK === "s3");
    expect(s3).toHaveLength(1);
    expect(envOf(s3[0]!).S3_BUCKET).toBe(envOf(init).BUCKET);
    expect(envOf(s3[0]!).S3_ENDPOINT).toBe("http://minio:9000");
    expect(s3[0]!.depends_on?.["minio-init"]).toEqual({ condition: "service_completed_successfully" });
  });

  it("runs one consumer on ./data/input and producers in two groups that the consumer provisions", async () => {
    const file = await loadCompose("docker-compose.yml");
    const svcs = filerelayServices(file);
    const consumers = svcs.filter(([, , k]) => k === "consumer");
    const producers = svcs.filter(([, , k]) => k === "producer");
    expect(consumers).toHaveLength(1);
    expect(producers).toHaveLength(2);

    const consumer = consumers[0]![1];
    const env = envOf(consumer);
    expect(hostPath(consumer, env.INPUT_DIR!)).toBe("data/input");
    expect(hostPath(consumer, env.ARCHIVE_DIR!)).toBe("data/archive");
    expect(hostPath(consumer, env.ERROR_DIR!)).toBe("data/error");

    const groups = producers.map(([, s]) => envOf(s).PRODUCER_GROUP);
    expect(new Set(groups).size).toBe(2);
    expect(env.SINK_GROUPS!.split(",").sort()).toEqual([...groups].sort());
    expect(producers.map(([, s]) => envOf(s).SINK).sort()).toEqual(["fs", "s3"]);
    const fs = producers.find(([, s]) => envOf(s).SINK === "fs")![1];
    expect(hostPath(fs, envOf(fs).OUTPUT_DIR!)).toBe("data/output");
    expect(hostPath(fs, envOf(fs).ERROR_DIR!)).toBeDefined();
  });

  it("gives every filerelay service a valid environment, its port, health check, restart policy and grace period", async () => {
    checkFilerelayServices(await loadCompose("docker-compose.yml"));
  });

  it("gives every long-running service a health check and a restart policy", async () => {
    const { services } = await loadCompose("docker-compose.yml");
    for (const [name, s] of Object.entries(services)) {
      if (s.restart === "no") continue; // one-shot jobs
      expect(s.healthcheck, `${name} healthcheck`).toBeDefined();
      expect(s.restart, `${name} restart`).toBe("unless-stopped");
    }
  });
});

describe("deploy/compose/nats-cluster.yml", () => {
  const load = async () =>
    mergeCompose(await loadCompose("docker-compose.yml"), await loadCompose("deploy/compose/nats-cluster.yml"));
  const natsNodes = (file: ComposeFile) =>
    Object.entries(file.services).filter(([, s]) => s.image?.startsWith("nats:") === true);

  it("describes a 3-node JetStream cluster whose nodes route to each other", async () => {
    const file = await load();
    const nodes = natsNodes(file);
    expect(nodes.map(([n]) => n).sort()).toEqual(["nats", "nats-2", "nats-3"]);
    const names = new Set<string>();
    for (const [service, s] of nodes) {
      const args = argv(s.command);
      expect(s.image).toMatch(/^nats:2\.10/);
      expect(args).toContain("-js");
      expect(argValue(args, "-m")).toBe("8222");
      expect(argValue(args, "-cluster_name")).toBe("filerelay");
      expect(argValue(args, "-cluster")).toBe("nats://0.0.0.0:6222");
      names.add(argValue(args, "-name")!);
      const routes = argValue(args, "-routes")!.split(",");
      const others = nodes.map(([n]) => n).filter((n) => n !== service);
      expect(routes.sort()).toEqual(others.map((n) => `nats://${n}:6222`).sort());
      expect(s.healthcheck?.test.join(" ")).toContain("/healthz");
      expect(s.restart).toBe("unless-stopped");
      const dataVolume = s.volumes?.find((v) => v.endsWith(":/data"))?.split(":")[0];
      expect(file.volumes).toHaveProperty(dataVolume!);
    }
    expect(names.size).toBe(3);
  });

  it("points every filerelay service at all three servers with R3 streams", async () => {
    const file = await load();
    const nodes = natsNodes(file).map(([n]) => n);
    for (const [name, s, kind] of filerelayServices(file)) {
      const env = envOf(s);
      const parsed = schemas[kind].parse(
        Object.fromEntries(Object.entries(env).filter(([k]) => k in schemas[kind].shape)),
      );
      expect(parsed.NATS_URL.sort(), name).toEqual(nodes.map((n) => `nats://${n}:4222`).sort());
      expect(parsed.STREAM_REPLICAS, name).toBe(3);
      for (const n of nodes)
        expect(s.depends_on?.[n], `${name} waits for ${n}`).toEqual({ condition: "service_healthy" });
      // The override keeps what it does not mention (the producer still waits for its bucket).
      if (env.SINK === "s3") expect(s.depends_on?.["minio-init"]).toBeDefined();
    }
  });

  it("forms a working cluster when its NATS command lines are run (hosts mapped to loopback)", async () => {
    const bin = findNatsServer();
    if (!bin) throw new Error("nats-server is not installed");
    const file = await load();
    const nodes = natsNodes(file);
    const ports = new Map<string, { client: number; cluster: number; monitor: number }>();
    for (const [n] of nodes)
      ports.set(n, { client: await freePort(), cluster: await freePort(), monitor: await freePort() });
    const dirs: string[] = [];
    const procs: ChildProcess[] = [];
    try {
      for (const [service, s] of nodes) {
        const p = ports.get(service)!;
        const dir = await mkdtemp(join(tmpdir(), "filerelay-compose-nats-"));
        dirs.push(dir);
        // Rewrite only what differs outside Docker: addresses, ports, store path.
        const args = argv(s.command).map((a) =>
          a
            .replace(/^(-?-sd)=\/data$/, `$1=${dir}`)
            .replace(/^(-?-m)=8222$/, `$1=${p.monitor}`)
            .replace(/^(-?-cluster)=nats:\/\/0\.0\.0\.0:6222$/, `$1=nats://127.0.0.1:${p.cluster}`)
            .replace(/nats:\/\/([\w-]+):6222/g, (m, host: string) =>
              ports.has(host) ? `nats://127.0.0.1:${ports.get(host)!.cluster}` : m,
            ),
        );
        const proc = spawn(bin, [...args, "-a", "127.0.0.1", "-p", String(p.client)], { stdio: "ignore" });
        guardChild(proc);
        procs.push(proc);
      }
      await waitFor(
        async () => {
          for (const p of ports.values()) if (!(await fetch(`http://127.0.0.1:${p.monitor}/healthz`)).ok) return false;
          return true;
        },
        { timeoutMs: 60_000, message: "the compose NATS cluster to become healthy" },
      );
      const nc = await connect({ servers: [...ports.values()].map((p) => `nats://127.0.0.1:${p.client}`) });
      try {
        const jsm = await jetstreamManager(nc);
        const info = await waitFor(
          () => jsm.streams.add({ name: "R3CHECK", subjects: ["r3.>"], num_replicas: 3, storage: StorageType.File }),
          { timeoutMs: 30_000, message: "an R3 stream to be accepted" },
        );
        expect(info.config.num_replicas).toBe(3);
        expect(info.cluster?.replicas).toHaveLength(2);
      } finally {
        await nc.close();
      }
    } finally {
      for (const proc of procs) {
        proc.kill("SIGKILL");
        await waitForExit(proc, 10_000);
      }
      for (const dir of dirs) await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("deploy/compose/transformer.yml", () => {
  const load = async () =>
    mergeCompose(await loadCompose("docker-compose.yml"), await loadCompose("deploy/compose/transformer.yml"));
  const parsedEnv = (s: ComposeService, kind: Kind) =>
    schemas[kind].parse(Object.fromEntries(Object.entries(envOf(s)).filter(([k]) => k in schemas[kind].shape)));

  it("leaves the base file without a transformer", async () => {
    const kinds = filerelayServices(await loadCompose("docker-compose.yml")).map(([, , k]) => k);
    expect(kinds).not.toContain("transformer");
  });

  it("chains consumer → transformer → both producers, each group provisioned by the stage before it", async () => {
    const svcs = filerelayServices(await load());
    const [consumer, ...moreConsumers] = svcs.filter(([, , k]) => k === "consumer");
    const [transformer, ...moreTransformers] = svcs.filter(([, , k]) => k === "transformer");
    const producers = svcs.filter(([, , k]) => k === "producer");
    expect(moreConsumers).toEqual([]);
    expect(moreTransformers).toEqual([]);
    expect(producers).toHaveLength(2);

    const c = parsedEnv(consumer![1], "consumer") as z.output<typeof consumerEnvSchema>;
    const t = parsedEnv(transformer![1], "transformer") as z.output<typeof transformerEnvSchema>;
    // The consumer's only group is the transformer's, on the subject the consumer publishes.
    expect(c.SINK_GROUPS).toEqual([t.TRANSFORM_GROUP]);
    expect(t.SUBJECT).toBe(c.SUBJECT);
    expect(t.STREAM).toBe(c.STREAM);
    expect(t.OUTPUT_SUBJECT).not.toBe(c.SUBJECT);
    // Every producer reads the transformer's output, in a group the transformer provisions there.
    const groups = producers.map(([name, s]) => {
      const p = parsedEnv(s, "producer") as z.output<typeof producerEnvSchema>;
      expect(p.SUBJECT, name).toBe(t.OUTPUT_SUBJECT);
      expect(p.STREAM, name).toBe(t.STREAM);
      return p.PRODUCER_GROUP;
    });
    expect([...t.SINK_GROUPS].sort()).toEqual([...groups].sort());
    // Groups the base stack binds to files.input are not reused on files.processed (a start-up error).
    const base = filerelayServices(await loadCompose("docker-compose.yml"));
    const baseGroups = base.flatMap(([, s]) => [envOf(s).PRODUCER_GROUP, ...(envOf(s).SINK_GROUPS ?? "").split(",")]);
    for (const g of groups) expect(baseGroups, g).not.toContain(g);
    // Dead letters of the transformer land in ./data like the other services'.
    expect(hostPath(transformer![1], t.ERROR_DIR!)).toBe("data/transform-errors");
  });

  it("gives every filerelay service a valid environment, its port, health check, restart policy and grace period", async () => {
    checkFilerelayServices(await load());
  });

  it("publishes no host port twice", async () => {
    const hostPorts = Object.values((await load()).services).flatMap((s) =>
      (s.ports ?? []).map((p) => p.split(":")[0]),
    );
    expect(hostPorts.length).toBeGreaterThan(0);
    expect(new Set(hostPorts).size).toBe(hostPorts.length);
  });

  it("relays a tar.gz through the composed consumer, transformer and fs producer (environments as written)", async () => {
    const file = await load();
    await using nats = await startNats();
    const root = await mkdtemp(join(tmpdir(), "filerelay-compose-transformer-"));
    try {
      // The composed environments, with only what differs outside Docker rewritten:
      // the broker's address, bind mounts under a temp dir, scratch space, ports.
      const envFor = (name: string, extra: Record<string, string> = {}): Record<string, string> => {
        const s = file.services[name]!;
        const env = envOf(s);
        for (const [k, v] of Object.entries(env)) {
          if (!v.startsWith("/data")) continue;
          const host = hostPath(s, v);
          if (!host) throw new Error(`${name}: ${k}=${v} is on no bind mount`);
          env[k] = join(root, host);
        }
        return { ...env, NATS_URL: nats.url, HTTP_PORT: "0", ...extra };
      };
      for (const d of ["data/input", "data/archive", "data/error", "data/output", "data/dead-letters"])
        await mkdir(join(root, d), { recursive: true });

      await using transformer = startTransformer(
        envFor("transformer", { TRANSFORM_TMP_DIR: join(root, "scratch"), LOG_LEVEL: "info" }),
      );
      await transformerReady(transformer, 60_000);
      // Test pacing only: a quicker stability check, no free-space margin on a shared disk.
      await using consumer = startService(
        "consumer",
        envFor("consumer", { STABILITY_MS: "200", POLL_INTERVAL_MS: "300" }),
      );
      await using producer = startService("producer", envFor("producer-fs", { DISK_SPACE_FACTOR: "0" }));

      const src = join(root, "src");
      const entries: [string, string][] = [
        ["reports/q1.csv", "region,amount\nnorth,1\nsouth,2\n"],
        ["notes/readme.txt", "hello\n"],
      ];
      for (const [rel, content] of entries) {
        await mkdir(join(src, dirname(rel)), { recursive: true });
        await writeFile(join(src, rel), content);
      }
      execFileSync("tar", ["-czf", join(root, "bundle.tar.gz"), "-C", src, "reports", "notes"]);
      execFileSync("cp", [join(root, "bundle.tar.gz"), join(root, "data/input/bundle.tar.gz")]);

      const out = join(root, "data/output");
      const sha = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");
      // The fs producer's FILENAME_TEMPLATE: {{.RelDir}}/{{.ShortID}}-{{.Name}}{{.Ext}}.
      const find = async (dir: string, base: string) =>
        (await readdir(join(out, dir)).catch(() => [] as string[])).filter((n) =>
          new RegExp(`^[0-9a-f]{8}-${base.replace(/\./g, "\\.")}$`).test(n),
        );
      await waitFor(
        async () => {
          for (const [rel] of entries)
            if ((await find(`bundle.tar.gz/${dirname(rel)}`, basename(rel))).length === 0) return false;
          return (
            (await find("bundle.tar.gz/reports", "q1.parquet")).length > 0 &&
            (await find(".", "bundle.tar.gz")).length > 0
          );
        },
        { timeoutMs: 120_000, message: "the archive, its entries and the Parquet file to land" },
      );
      for (const [rel, content] of entries) {
        const [name] = await find(`bundle.tar.gz/${dirname(rel)}`, basename(rel));
        expect(sha(await readFile(join(out, `bundle.tar.gz/${dirname(rel)}`, name!))), rel).toBe(sha(content));
      }
      const [archive] = await find(".", "bundle.tar.gz");
      expect(sha(await readFile(join(out, archive!)))).toBe(sha(await readFile(join(root, "bundle.tar.gz"))));
      expect(consumer.logs().some((l) => l.level === "error")).toBe(false);
      expect(producer.logs().some((l) => l.level === "error")).toBe(false);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

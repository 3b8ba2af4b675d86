import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { describe, expect, it } from "vitest";
import type { z } from "zod";
import { consumerEnvSchema } from "../packages/consumer/src/config.js";
import { producerEnvSchema } from "../packages/producer/src/config.js";
import { batcherEnvSchema } from "../packages/batcher/src/config.js";
import { gatewayEnvSchema } from "../packages/gateway/src/config.js";
import { transformerEnvSchema } from "../packages/transformer/src/config.js";
import { repoRoot } from "./support/index.js";

/**
 * deploy/k8s is never applied to a cluster here; these checks parse it and
 * assert what would break a rollout or silently misconfigure the services:
 * resources listed in the kustomization, images, probes and ports, PDB
 * selectors, volumes, and every environment variable being one the service
 * reads, with values its schema accepts.
 */

const dir = join(repoRoot, "deploy/k8s");

interface Meta {
  name: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface Probe {
  httpGet: { path: string; port: string | number };
  timeoutSeconds?: number;
}
interface Container {
  name: string;
  image: string;
  command?: string[];
  envFrom?: ({ configMapRef: { name: string } } | { secretRef: { name: string } })[];
  env?: { name: string; value?: string }[];
  ports?: { name?: string; containerPort: number }[];
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: { allowPrivilegeEscalation?: boolean; readOnlyRootFilesystem?: boolean };
  volumeMounts?: { name: string; mountPath: string; subPath?: string }[];
}
interface Deployment {
  kind: "Deployment";
  metadata: Meta;
  spec: {
    replicas: number;
    strategy?: { type: string };
    selector: { matchLabels: Record<string, string> };
    template: {
      metadata: Meta;
      spec: {
        terminationGracePeriodSeconds?: number;
        securityContext?: { runAsNonRoot?: boolean; runAsUser?: number };
        initContainers?: Container[];
        containers: Container[];
        volumes?: { name: string; persistentVolumeClaim?: { claimName: string }; emptyDir?: object }[];
      };
    };
  };
}
interface Resource {
  kind: string;
  metadata: Meta;
  data?: Record<string, string>;
  stringData?: Record<string, string>;
  spec?: Record<string, unknown>;
}

const kustomization = parseAllDocuments(readFileSync(join(dir, "kustomization.yaml"), "utf8"))[0]!.toJS() as {
  namespace: string;
  resources: string[];
  images: { name: string; newTag: string }[];
};
const readManifests = (base: string, file: string): Resource[] =>
  parseAllDocuments(readFileSync(join(base, file), "utf8")).map((d) => {
    if (d.errors.length > 0) throw new Error(`${file}: ${d.errors.map((e) => e.message).join("; ")}`);
    return d.toJS() as Resource;
  });
const resources: Resource[] = kustomization.resources.flatMap((file) => readManifests(dir, file));
const ofKind = <T = Resource>(kind: string, from: Resource[] = resources): T[] =>
  from.filter((r) => r.kind === kind) as T[];
const byName = (kind: string, name: string, from: Resource[] = resources): Resource => {
  const r = from.find((x) => x.kind === kind && x.metadata.name === name);
  if (!r) throw new Error(`no ${kind} ${name}`);
  return r;
};
const deployments = ofKind<Deployment>("Deployment");
const component = (d: Deployment) => d.metadata.labels?.["app.kubernetes.io/component"];
const producers = deployments.filter((d) => component(d) === "producer");
const consumers = deployments.filter((d) => component(d) === "consumer");
const batchers = deployments.filter((d) => component(d) === "batcher");
const gateways = deployments.filter((d) => component(d) === "gateway");

const schemas = { consumer: consumerEnvSchema, producer: producerEnvSchema, gateway: gatewayEnvSchema } as const;
const AWS_VARIABLES = new Set(["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"]);
const dockerfileUid = Number(/^USER\s+(\d+)/m.exec(readFileSync(join(repoRoot, "deploy/Dockerfile"), "utf8"))?.[1]);

/** The environment a container sees: its ConfigMaps and Secrets, then `env`. */
function containerEnv(c: Container, from_: Resource[] = resources): Record<string, string> {
  const env: Record<string, string> = {};
  for (const from of c.envFrom ?? []) {
    const r =
      "configMapRef" in from
        ? byName("ConfigMap", from.configMapRef.name, from_)
        : byName("Secret", from.secretRef.name, from_);
    Object.assign(env, r.data, r.stringData);
  }
  for (const e of c.env ?? []) env[e.name] = e.value ?? "";
  return env;
}

/** Kubernetes resolves a named port through the container's ports. */
const probePort = (c: Container, p: Probe | undefined): number | undefined => {
  const port = p?.httpGet.port;
  return typeof port === "number" ? port : c.ports?.find((x) => x.name === port)?.containerPort;
};

describe("deploy/k8s", () => {
  it("lists every manifest in kustomization.yaml and pins both images", () => {
    const files = readdirSync(dir).filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml");
    expect([...kustomization.resources].sort()).toEqual(files.sort());
    expect(kustomization.namespace).toBe("filerelay");
    expect(kustomization.images.map((i) => i.name).sort()).toEqual([
      "filerelay/batcher",
      "filerelay/consumer",
      "filerelay/gateway",
      "filerelay/producer",
    ]);
    for (const d of deployments) {
      for (const c of [...d.spec.template.spec.containers, ...(d.spec.template.spec.initContainers ?? [])]) {
        const [image] = c.image.split(":");
        expect(
          kustomization.images.some((i) => i.name === image),
          `${d.metadata.name}: ${c.image}`,
        ).toBe(true);
      }
    }
    expect(producers).toHaveLength(1);
    expect(consumers.length).toBeGreaterThanOrEqual(1);
  });

  for (const kind of ["producer", "consumer", "gateway"] as const) {
    describe(`${kind} Deployments`, () => {
      const list = { producer: producers, consumer: consumers, gateway: gateways }[kind];
      const schema = schemas[kind];
      const defaultPort = schema.shape.HTTP_PORT.parse(undefined);

      it("run the right image, with probes on /healthz and /readyz, resources and scrape annotations", () => {
        for (const d of list) {
          const pod = d.spec.template;
          expect(pod.metadata.labels).toMatchObject(d.spec.selector.matchLabels);
          const [c, ...sidecars] = pod.spec.containers;
          expect(sidecars).toEqual([]);
          expect(c!.image).toMatch(new RegExp(`^filerelay/${kind}:`));
          expect(c!.command, "the image's CMD starts the service").toBeUndefined();
          expect(c!.ports).toEqual([{ name: "http", containerPort: defaultPort }]);
          expect(c!.livenessProbe?.httpGet.path).toBe("/healthz");
          expect(c!.readinessProbe?.httpGet.path).toBe("/readyz");
          expect(probePort(c!, c!.livenessProbe)).toBe(defaultPort);
          expect(probePort(c!, c!.readinessProbe)).toBe(defaultPort);
          // /readyz waits up to 5 s for its checks before answering 503 itself.
          expect(c!.readinessProbe?.timeoutSeconds).toBeGreaterThan(5);
          expect(c!.resources?.requests).toHaveProperty("cpu");
          expect(c!.resources?.requests).toHaveProperty("memory");
          expect(c!.resources?.limits).toHaveProperty("memory");
          expect(pod.metadata.annotations).toEqual({
            "prometheus.io/scrape": "true",
            "prometheus.io/port": String(defaultPort),
            "prometheus.io/path": "/metrics",
          });
          expect(pod.spec.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: dockerfileUid });
          expect(c!.securityContext).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true });
        }
      });

      it("read only variables the service knows, with values its schema accepts", () => {
        const known = new Set(Object.keys(schema.shape));
        for (const d of list) {
          const c = d.spec.template.spec.containers[0]!;
          const env = containerEnv(c);
          for (const key of Object.keys(env)) {
            expect(known.has(key) || AWS_VARIABLES.has(key), `${d.metadata.name}: ${key}`).toBe(true);
          }
          // Empty values mean "unset" to loadConfig, so drop them as it does.
          const input = Object.fromEntries(Object.entries(env).filter(([k, v]) => known.has(k) && v !== ""));
          const parsed = schema.safeParse(input);
          expect(parsed.error?.issues ?? [], d.metadata.name).toEqual([]);
          expect(parsed.data!.HTTP_PORT).toBe(defaultPort);
          // The kubelet's SIGKILL must come after the service's own shutdown deadline.
          const grace = d.spec.template.spec.terminationGracePeriodSeconds ?? 30;
          expect(grace * 1000).toBeGreaterThan(parsed.data!.SHUTDOWN_TIMEOUT_MS);
        }
      });

      it("keep their directories on persistent volumes", () => {
        const dirsOf = {
          consumer: ["INPUT_DIR", "ARCHIVE_DIR", "ERROR_DIR"],
          producer: ["OUTPUT_DIR", "ERROR_DIR"],
          gateway: ["GATEWAY_UPLOAD_DIR"],
        }[kind];
        for (const d of list) {
          const spec = d.spec.template.spec;
          const c = spec.containers[0]!;
          const env = containerEnv(c);
          for (const variable of dirsOf) {
            const path = env[variable];
            expect(path, `${d.metadata.name}: ${variable}`).toBeDefined();
            const mount = c.volumeMounts?.find((m) => path === m.mountPath || path!.startsWith(`${m.mountPath}/`));
            const volume = spec.volumes?.find((v) => v.name === mount?.name);
            const claim = volume?.persistentVolumeClaim?.claimName;
            expect(claim, `${d.metadata.name}: ${variable}=${path} is on a PVC`).toBeDefined();
            byName("PersistentVolumeClaim", claim!);
          }
          // Writable scratch space, since the root file system is read-only.
          expect(c.volumeMounts?.some((m) => m.mountPath === "/tmp")).toBe(true);
        }
      });
    });
  }

  it("runs two producers, kept available by a PodDisruptionBudget, on a volume they can share", () => {
    const [d] = producers;
    expect(d!.spec.replicas).toBe(2);
    expect(d!.spec.strategy?.type).toBe("RollingUpdate");
    const pdbs = ofKind<Resource & { spec: { minAvailable: number; selector: { matchLabels: object } } }>(
      "PodDisruptionBudget",
    );
    expect(pdbs).toHaveLength(1);
    expect(pdbs[0]!.spec.selector.matchLabels).toEqual(d!.spec.selector.matchLabels);
    expect(pdbs[0]!.spec.minAvailable).toBeGreaterThanOrEqual(1);
    expect(pdbs[0]!.spec.minAvailable).toBeLessThan(d!.spec.replicas);
    const claim = d!.spec.template.spec.volumes?.find((v) => v.persistentVolumeClaim)?.persistentVolumeClaim?.claimName;
    expect((byName("PersistentVolumeClaim", claim!).spec as { accessModes: string[] }).accessModes).toEqual([
      "ReadWriteMany",
    ]);
  });

  it("runs one consumer per input directory: one replica, recreated (its volume is ReadWriteOnce)", () => {
    const sources = new Set<string>();
    for (const d of consumers) {
      expect(d.spec.replicas).toBe(1);
      const env = containerEnv(d.spec.template.spec.containers[0]!);
      const source = env.SOURCE!;
      expect(sources.has(source), `SOURCE ${source} used once`).toBe(false);
      sources.add(source);
      expect(d.metadata.name).toBe(`filerelay-consumer-${source}`);
      const claim = d.spec.template.spec.volumes?.find((v) => v.persistentVolumeClaim)?.persistentVolumeClaim;
      const modes = (byName("PersistentVolumeClaim", claim!.claimName).spec as { accessModes: string[] }).accessModes;
      if (modes.includes("ReadWriteOnce")) expect(d.spec.strategy?.type).toBe("Recreate");
      // Every producer group gets every file, including those published before it first started.
      const groups = producers.map((p) => containerEnv(p.spec.template.spec.containers[0]!).PRODUCER_GROUP);
      expect(env.SINK_GROUPS?.split(",")).toEqual(expect.arrayContaining(groups));
    }
  });

  it("runs one batcher, recreated, with probes, a valid environment and a grace period past its shutdown deadline", () => {
    expect(batchers).toHaveLength(1);
    const d = batchers[0]!;
    expect(d.spec.replicas).toBe(1);
    expect(d.spec.strategy?.type).toBe("Recreate");
    const c = d.spec.template.spec.containers[0]!;
    expect(c.image).toMatch(/^filerelay\/batcher:/);
    const port = batcherEnvSchema.shape.HTTP_PORT.parse(undefined);
    expect(probePort(c, c.livenessProbe)).toBe(port);
    expect(probePort(c, c.readinessProbe)).toBe(port);
    expect(c.livenessProbe?.httpGet.path).toBe("/healthz");
    expect(c.readinessProbe?.httpGet.path).toBe("/readyz");
    const env = containerEnv(c);
    const known = new Set(Object.keys(batcherEnvSchema.shape));
    // The shared Secret also holds the producers' AWS credentials, which the batcher ignores.
    for (const key of Object.keys(env)) expect(known.has(key) || AWS_VARIABLES.has(key), key).toBe(true);
    const parsed = batcherEnvSchema.safeParse(
      Object.fromEntries(Object.entries(env).filter(([k, v]) => known.has(k) && v !== "")),
    );
    expect(parsed.error?.issues ?? []).toEqual([]);
    expect(c.volumeMounts?.some((m) => parsed.data!.BATCH_SPOOL_DIR.startsWith(`${m.mountPath}/`))).toBe(true);
    expect((d.spec.template.spec.terminationGracePeriodSeconds ?? 30) * 1000).toBeGreaterThan(
      parsed.data!.SHUTDOWN_TIMEOUT_MS,
    );
  });

  it("keeps credentials in a Secret, not in ConfigMaps", () => {
    const secretish = /PASSWORD|TOKEN|SECRET|ACCESS_KEY/;
    for (const cm of ofKind("ConfigMap")) {
      for (const key of Object.keys(cm.data ?? {})) expect(key, `${cm.metadata.name}`).not.toMatch(secretish);
    }
    const secret = byName("Secret", "filerelay-credentials");
    expect(Object.keys(secret.stringData ?? {})).toEqual(
      expect.arrayContaining(["NATS_PASSWORD", "NATS_TOKEN", "AWS_SECRET_ACCESS_KEY"]),
    );
  });
});

describe("deploy/k8s/transformer (overlay)", () => {
  const overlayDir = join(dir, "transformer");
  const overlay = parseAllDocuments(readFileSync(join(overlayDir, "kustomization.yaml"), "utf8"))[0]!.toJS() as {
    namespace: string;
    resources: string[];
    patches: { path: string }[];
    images: { name: string; newTag: string }[];
  };
  /**
   * What `kustomize build` makes of it, for what the overlay uses: the base's
   * resources, its own, and ConfigMap patches merging into `data` (anything
   * else in a patch fails here rather than being silently ignored).
   */
  const built: Resource[] = (() => {
    const out: Resource[] = [];
    for (const r of overlay.resources) {
      if (r === "../") out.push(...resources.map((x) => structuredClone(x)));
      else out.push(...readManifests(overlayDir, r));
    }
    for (const { path } of overlay.patches) {
      for (const patch of readManifests(overlayDir, path)) {
        expect(patch.kind, path).toBe("ConfigMap");
        expect(Object.keys(patch).sort(), path).toEqual(["apiVersion", "data", "kind", "metadata"]);
        const target = byName("ConfigMap", patch.metadata.name, out);
        target.data = { ...target.data, ...patch.data };
      }
    }
    return out;
  })();
  const deploymentsOf = (c: string) => ofKind<Deployment>("Deployment", built).filter((d) => component(d) === c);
  const envOf = (d: Deployment) => containerEnv(d.spec.template.spec.containers[0]!, built);
  const parse = <S extends z.ZodType>(schema: S, env: Record<string, string>, shape: object): z.output<S> =>
    schema.parse(Object.fromEntries(Object.entries(env).filter(([k, v]) => k in shape && v !== "")));

  it("builds on the base, in its namespace, and pins the transformer image", () => {
    expect(overlay.resources).toContain("../");
    expect(overlay.namespace).toBe(kustomization.namespace);
    const files = readdirSync(overlayDir).filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml");
    expect([...overlay.resources.filter((r) => r !== "../"), ...overlay.patches.map((p) => p.path)].sort()).toEqual(
      files.sort(),
    );
    expect(overlay.images.map((i) => i.name)).toEqual(["filerelay/transformer"]);
    expect(deploymentsOf("transformer")).toHaveLength(1);
  });

  it("runs the transformer image with probes on 9466, resources, scrape annotations and writable scratch space", () => {
    const [d] = deploymentsOf("transformer");
    const pod = d!.spec.template;
    expect(pod.metadata.labels).toMatchObject(d!.spec.selector.matchLabels);
    const [c, ...sidecars] = pod.spec.containers;
    expect(sidecars).toEqual([]);
    expect(c!.image).toMatch(/^filerelay\/transformer:/);
    expect(c!.command).toBeUndefined();
    expect(c!.ports).toEqual([{ name: "http", containerPort: 9466 }]);
    expect(c!.livenessProbe?.httpGet.path).toBe("/healthz");
    expect(c!.readinessProbe?.httpGet.path).toBe("/readyz");
    expect(probePort(c!, c!.livenessProbe)).toBe(9466);
    expect(probePort(c!, c!.readinessProbe)).toBe(9466);
    expect(c!.readinessProbe?.timeoutSeconds).toBeGreaterThan(5);
    expect(pod.metadata.annotations).toEqual({
      "prometheus.io/scrape": "true",
      "prometheus.io/port": "9466",
      "prometheus.io/path": "/metrics",
    });
    expect(pod.spec.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: dockerfileUid });
    expect(c!.securityContext).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true });
    expect(c!.resources?.requests).toHaveProperty("cpu");

    const env = envOf(d!);
    const known = new Set(Object.keys(transformerEnvSchema.shape));
    for (const key of Object.keys(env)) expect(known.has(key) || AWS_VARIABLES.has(key), key).toBe(true);
    const t = parse(transformerEnvSchema, env, transformerEnvSchema.shape);
    expect(t.HTTP_PORT).toBe(transformerEnvSchema.shape.HTTP_PORT.parse(undefined));
    expect((d!.spec.template.spec.terminationGracePeriodSeconds ?? 30) * 1000).toBeGreaterThan(t.SHUTDOWN_TIMEOUT_MS);
    // The root file system is read-only: scratch space (zip, DuckDB spill) must be a volume.
    const mount = c!.volumeMounts?.find((m) => t.TRANSFORM_TMP_DIR!.startsWith(m.mountPath));
    expect(mount, `TRANSFORM_TMP_DIR=${t.TRANSFORM_TMP_DIR}`).toBeDefined();
    expect(pod.spec.volumes?.find((v) => v.name === mount!.name)).toBeDefined();
    expect(c!.volumeMounts?.some((m) => m.mountPath === "/tmp")).toBe(true);
    // Room for DuckDB in every conversion that may run at once.
    const limitMiB = Number(/^(\d+)Mi$/.exec(c!.resources?.limits?.memory ?? "")?.[1]);
    const perConversionMiB = Number(/^(\d+)MB$/.exec(t.CONVERT_MEMORY_LIMIT)?.[1]);
    expect(limitMiB).toBeGreaterThan(t.CONCURRENCY * perConversionMiB);
  });

  it("chains consumer → transformer → producer, each group provisioned by the stage before it", () => {
    const [t] = deploymentsOf("transformer").map((d) =>
      parse(transformerEnvSchema, envOf(d), transformerEnvSchema.shape),
    );
    const consumers = deploymentsOf("consumer");
    const producers = deploymentsOf("producer");
    expect(consumers.length).toBeGreaterThanOrEqual(1);
    expect(producers).toHaveLength(1);
    for (const d of consumers) {
      const c = parse(consumerEnvSchema, envOf(d), consumerEnvSchema.shape);
      expect(c.SINK_GROUPS, d.metadata.name).toEqual([t!.TRANSFORM_GROUP]);
      expect(c.SUBJECT).toBe(t!.SUBJECT);
      expect(c.STREAM).toBe(t!.STREAM);
    }
    const p = parse(producerEnvSchema, envOf(producers[0]!), producerEnvSchema.shape);
    expect(p.SUBJECT).toBe(t!.OUTPUT_SUBJECT);
    expect(t!.SINK_GROUPS).toContain(p.PRODUCER_GROUP);
    // Not a group the base binds to files.input (that would stop the producer at start).
    const baseProducer = containerEnv(producers[0]!.spec.template.spec.containers[0]!);
    expect(p.PRODUCER_GROUP).not.toBe(baseProducer.PRODUCER_GROUP);
  });
});

import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { createMetrics, silentLogger, startHttpServer } from "@filerelay/core/internal";
import { consumerEnvSchema } from "../packages/consumer/src/config.js";
import { producerEnvSchema } from "../packages/producer/src/config.js";
import { batcherEnvSchema } from "../packages/batcher/src/config.js";
import { gatewayEnvSchema } from "../packages/gateway/src/config.js";
import { transformerEnvSchema } from "../packages/transformer/src/config.js";
import { createTransformerMetrics } from "../packages/transformer/src/metrics.js";
import { repoRoot } from "./support/index.js";

/**
 * No Docker engine runs here, so deploy/Dockerfile is checked by parsing it:
 * stages and targets, base image, user, entry points that the build really
 * produces, ports matching the services' HTTP_PORT defaults, and a health
 * check that is actually run against a live /healthz.
 */

interface Instruction {
  op: string;
  args: string;
}
interface Stage {
  name: string;
  from: string;
  instructions: Instruction[];
}

function parseDockerfile(text: string): { args: Map<string, string>; stages: Stage[] } {
  const logical = text
    .replace(/\\\r?\n/g, " ")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"));
  const globalArgs = new Map<string, string>();
  const stages: Stage[] = [];
  for (const line of logical) {
    const m = /^([A-Za-z]+)\s+(.*)$/.exec(line);
    if (!m) throw new Error(`unparsable Dockerfile line: ${line}`);
    const op = m[1]!.toUpperCase();
    const args = m[2]!.trim();
    if (op === "FROM") {
      const f = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      if (!f) throw new Error(`bad FROM: ${args}`);
      const from = f[1]!.replace(/\$\{(\w+)\}/g, (_, name: string) => globalArgs.get(name) ?? `\${${name}}`);
      stages.push({ name: f[2] ?? `#${stages.length}`, from, instructions: [] });
    } else if (stages.length === 0) {
      if (op !== "ARG") throw new Error(`${op} before the first FROM`);
      const a = /^(\w+)=(\S+)$/.exec(args);
      if (a) globalArgs.set(a[1]!, a[2]!);
    } else {
      stages.at(-1)!.instructions.push({ op, args });
    }
  }
  return { args: globalArgs, stages };
}

const dockerfile = parseDockerfile(readFileSync(join(repoRoot, "deploy/Dockerfile"), "utf8"));
const stage = (name: string): Stage => {
  const s = dockerfile.stages.find((x) => x.name === name);
  if (!s) throw new Error(`no stage ${name}`);
  return s;
};
/** The stage and its ancestors, nearest first (instructions are inherited). */
const chain = (name: string): Stage[] => {
  const out: Stage[] = [];
  for (let s: Stage | undefined = stage(name); s !== undefined;) {
    out.push(s);
    const parent: string = s.from;
    s = dockerfile.stages.find((x) => x.name === parent);
  }
  return out;
};
const last = (name: string, op: string): string | undefined => {
  for (const s of chain(name)) {
    const found = s.instructions.filter((i) => i.op === op).at(-1);
    if (found) return found.args;
  }
  return undefined;
};
const jsonForm = (args: string | undefined): string[] => {
  const v: unknown = JSON.parse(args ?? "null");
  if (!Array.isArray(v) || !v.every((x) => typeof x === "string")) throw new Error(`not exec form: ${args}`);
  return v;
};

const services = {
  consumer: { schema: consumerEnvSchema, pkg: "@filerelay/consumer" },
  producer: { schema: producerEnvSchema, pkg: "@filerelay/producer" },
  batcher: { schema: batcherEnvSchema, pkg: "@filerelay/batcher" },
  gateway: { schema: gatewayEnvSchema, pkg: "@filerelay/gateway" },
  transformer: { schema: transformerEnvSchema, pkg: "@filerelay/transformer" },
} as const;
type Service = keyof typeof services;
const defaultHttpPort = (svc: Service): number => services[svc].schema.shape.HTTP_PORT.parse(undefined);

/** Variables the image may set that are not filerelay's own. */
const PLATFORM_VARIABLES = new Set(["NODE_ENV"]);

describe("deploy/Dockerfile", () => {
  it("builds on node:22-slim and has consumer, producer and transformer targets", () => {
    expect(dockerfile.args.get("NODE_IMAGE")).toBe("node:22-slim");
    for (const s of dockerfile.stages) {
      const isStage = dockerfile.stages.some((x) => x.name === s.from);
      expect(isStage || s.from === "node:22-slim", `${s.name} FROM ${s.from}`).toBe(true);
    }
    for (const svc of ["consumer", "producer", "transformer"] as const) {
      expect(chain(svc).at(-1)!.from).toBe("node:22-slim");
    }
  });

  it("build stage installs from the lockfile, compiles, and extracts production dependencies per service", () => {
    const build = stage("build");
    const runs = build.instructions.filter((i) => i.op === "RUN").map((i) => i.args);
    expect(runs.some((r) => /npm install -g .*pnpm@\$\{PNPM_VERSION\}/.test(r))).toBe(true);
    expect(build.instructions.find((i) => i.op === "ARG" && i.args.startsWith("PNPM_VERSION="))?.args).toBe(
      "PNPM_VERSION=10",
    );
    expect(runs.some((r) => r.includes("pnpm install --frozen-lockfile"))).toBe(true);
    expect(runs.some((r) => /\bpnpm build\b/.test(r))).toBe(true);
    for (const [svc, { pkg }] of Object.entries(services)) {
      const name = (
        JSON.parse(readFileSync(join(repoRoot, `packages/${svc}/package.json`), "utf8")) as { name: string }
      ).name;
      expect(name).toBe(pkg);
      expect(runs.some((r) => r.includes(`--filter ${pkg} deploy --prod --legacy /out/packages/${svc}`))).toBe(true);
    }
    // Sources copied into the build exist and are not excluded by .dockerignore.
    const ignored = readFileSync(join(repoRoot, ".dockerignore"), "utf8")
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith("#"));
    for (const copy of build.instructions.filter((i) => i.op === "COPY")) {
      const parts = copy.args.split(/\s+/);
      for (const src of parts.slice(0, -1)) {
        if (src === ".") continue;
        expect(existsSync(join(repoRoot, src)), `COPY source ${src}`).toBe(true);
        expect(ignored).not.toContain(src);
      }
    }
    for (const pattern of ["**/node_modules", "**/dist", ".git", ".env", "data"]) expect(ignored).toContain(pattern);
  });

  for (const svc of ["consumer", "producer", "transformer", "batcher"] as const) {
    describe(`target ${svc}`, () => {
      it("runs as a numeric non-root user under tini", () => {
        const user = last(svc, "USER");
        expect(user).toMatch(/^\d+(:\d+)?$/);
        expect(Number(user!.split(":")[0])).toBeGreaterThan(0);
        expect(jsonForm(last(svc, "ENTRYPOINT"))).toEqual(["/usr/bin/tini", "--"]);
        const installsTini = chain(svc).some((s) =>
          s.instructions.some((i) => i.op === "RUN" && /apt-get install .*\btini\b/.test(i.args)),
        );
        expect(installsTini).toBe(true);
      });

      it("starts the entry point that the build produces", () => {
        const cmd = jsonForm(last(svc, "CMD"));
        expect(cmd).toEqual(["node", `packages/${svc}/dist/main.js`]);
        expect(last(svc, "WORKDIR")).toBe("/app");
        // What pnpm deploy extracted is copied to /app/packages/<svc>...
        const copy = stage(svc).instructions.find((i) => i.op === "COPY")?.args;
        expect(copy).toBe(`--from=build /out/packages/${svc} /app/packages/${svc}`);
        // ...and contains dist/ (package.json "files"), which tsc fills from src/.
        const pkg = JSON.parse(readFileSync(join(repoRoot, `packages/${svc}/package.json`), "utf8")) as {
          files: string[];
        };
        expect(pkg.files).toContain("dist");
        const tsconfig = JSON.parse(readFileSync(join(repoRoot, `packages/${svc}/tsconfig.build.json`), "utf8")) as {
          compilerOptions: { outDir: string; rootDir: string };
        };
        expect(tsconfig.compilerOptions).toMatchObject({ outDir: "dist", rootDir: "src" });
        expect(existsSync(join(repoRoot, `packages/${svc}/src/main.ts`)), `packages/${svc}/src/main.ts`).toBe(true);
      });

      it("exposes the service's default HTTP_PORT and sets only known variables", () => {
        expect(last(svc, "EXPOSE")).toBe(String(defaultHttpPort(svc)));
        const known = new Set(Object.keys(services[svc].schema.shape));
        for (const s of chain(svc)) {
          for (const env of s.instructions.filter((i) => i.op === "ENV")) {
            for (const m of env.args.matchAll(/(\w+)=/g)) {
              expect(known.has(m[1]!) || PLATFORM_VARIABLES.has(m[1]!), `ENV ${m[1]}`).toBe(true);
            }
          }
        }
      });

      it("has a HEALTHCHECK that passes against a live /healthz and fails without one", async () => {
        const hc = last(svc, "HEALTHCHECK");
        const m = /^(--\S+\s+)*CMD\s+(\[.*\])$/.exec(hc ?? "");
        expect(m, `HEALTHCHECK ${hc}`).not.toBeNull();
        const cmd = jsonForm(m![2]);
        expect(cmd[0]).toBe("node");
        expect(cmd.join(" ")).toContain(`process.env.HTTP_PORT || ${defaultHttpPort(svc)}`);
        expect(cmd.join(" ")).toContain("/healthz");

        // Asynchronously: the server answering it lives in this process.
        const run = (port: number) =>
          new Promise<number | null>((resolve, reject) => {
            const child = spawn(process.execPath, cmd.slice(1), { env: { HTTP_PORT: String(port) }, stdio: "ignore" });
            child.once("error", reject);
            child.once("exit", resolve);
          });
        // Any registry serves here: the check only needs /healthz to answer.
        await using metrics =
          svc === "transformer" ? createTransformerMetrics() : createMetrics(svc === "batcher" ? "producer" : svc);
        const http = await startHttpServer({
          port: 0,
          host: "127.0.0.1",
          log: silentLogger(),
          metrics,
          ready: () => Promise.resolve(),
        });
        try {
          expect(await run(http.port)).toBe(0);
        } finally {
          await http.close();
        }
        expect(await run(http.port)).toBe(1);
      });
    });
  }
});

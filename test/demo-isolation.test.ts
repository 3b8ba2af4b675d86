import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { provision, silentLogger } from "@filerelay/core/internal";
import { createPublisher, listFiles, testFile } from "./producer-support.js";
import { guardChild, repoRoot, startNats, waitFor, waitForExit } from "./support/index.js";

// `pnpm demo` next to a real deployment: the demo must neither join its group nor drain its stream.

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "demo-isolation-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function startDemo(env: Record<string, string>) {
  const child = guardChild(
    spawn(process.execPath, [join(repoRoot, "scripts/demo.mjs")], {
      cwd: repoRoot,
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", DEMO_DIR: dir, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    }),
  );
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (c: Buffer) => (stdout += c.toString("utf8")));
  child.stderr?.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
  return { child, stdout: () => stdout, stderr: () => stderr };
}

/** What a default-named deployment holds: its stream, its groups and their counts. */
async function snapshot(jsm: JetStreamManager) {
  const streams: string[] = [];
  for await (const s of jsm.streams.list()) streams.push(s.config.name);
  const groups: [string, number, number][] = [];
  for await (const c of jsm.consumers.list("FILES")) groups.push([c.name, c.num_pending, c.num_ack_pending]);
  return { streams: streams.sort(), groups, messages: (await jsm.streams.info("FILES")).state.messages };
}

describe("pnpm demo next to a default-named deployment", () => {
  it("runs on its own server and names, leaves the deployment's stream and group untouched, and stops on Ctrl-C with exit 0", async () => {
    await using production = await startNats();
    const nc = await connect({ servers: production.url });
    try {
      await provision(
        nc,
        { STREAM: "FILES", SUBJECT: "files.input", STREAM_REPLICAS: 1 },
        { log: silentLogger(), groups: ["file-producers"] },
      );
      await using pub = await createPublisher(production.url);
      for (let i = 0; i < 3; i++) await pub.publish(testFile(`prod/${i}.txt`, `production file ${i}\n`));
      const jsm = await jetstreamManager(nc);
      const before = await snapshot(jsm);
      expect(before.groups).toEqual([["file-producers", 3, 0]]);

      // 1. Without NATS_URL: the demo starts its own server, whatever else runs on this machine.
      const demo = startDemo({});
      await waitFor(() => demo.stdout().includes("Drop your own files"), {
        timeoutMs: 120_000,
        message: `the demo's samples to land (stdout: ${demo.stdout().slice(-1500)} stderr: ${demo.stderr().slice(-1500)})`,
      });
      const out = demo.stdout();
      expect(out).toMatch(/starting the demo's own nats-server on 127\.0\.0\.1:\d+/);
      expect(out).toContain("stream DEMO, subject demo.input, group demo-producers");
      // Health/metrics URLs, or why there are none (a port in use by something else).
      expect(out).toMatch(
        /consumer: (http:\/\/127\.0\.0\.1:9464\/healthz|no health\/metrics endpoint \(port 9464 is busy\))/,
      );
      expect(out).toMatch(
        /producer: (http:\/\/127\.0\.0\.1:9465\/healthz|no health\/metrics endpoint \(port 9465 is busy\))/,
      );
      // The samples keep their names: <name>-<8 hex><ext>.
      const written = (await listFiles(join(dir, "output"))).map((p) => p.split("/").pop() ?? p);
      expect(written.map((n) => n.replace(/-[0-9a-f]{8}(?=\.|$)/, "-*")).sort()).toEqual(
        ["big-sample-*.bin", "hello-*.txt", "sales-*.csv", "todo-*.md"].sort(),
      );

      demo.child.kill("SIGINT");
      expect(await waitForExit(demo.child, 60_000)).toBe(0);
      expect(demo.stdout()).toContain("stopped.");
      expect(await snapshot(jsm)).toEqual(before);

      // 2. Pointed at the deployment's server: refused up front, nothing created there.
      const shared = startDemo({ NATS_URL: production.url });
      expect(await waitForExit(shared.child, 120_000)).not.toBe(0);
      expect(shared.stderr()).toContain("already holds another filerelay deployment");
      expect(shared.stderr()).toContain("FILES_DLQ");
      expect(await snapshot(jsm)).toEqual(before);
    } finally {
      await nc.close();
    }
  });
});

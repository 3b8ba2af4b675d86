import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { consumeFiles, provision, publishFile, silentLogger } from "@filerelay/core/internal";
import { guardChild, repoRoot, startNats, waitFor, waitForExit } from "./support/index.js";

const CLI = fileURLToPath(new URL("../packages/cli/dist/main.js", import.meta.url));
const log = silentLogger();

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "cli-groups-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function cli(
  args: string[],
  env: Record<string, string>,
  opts: { entry?: string[]; cwd?: string } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const [cmd, ...pre] = opts.entry ?? [process.execPath, CLI];
  const child = guardChild(
    spawn(cmd ?? process.execPath, [...pre, ...args], {
      cwd: opts.cwd ?? dir,
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    }),
  );
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (c: Buffer) => (stdout += c.toString("utf8")));
  child.stderr?.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
  return { code: await waitForExit(child, 60_000), stdout, stderr };
}

interface GroupRow {
  name: string;
  pending: number;
  ackPending: number;
  waiting: number;
  lastDelivery: string | null;
}

describe("filerelay groups", () => {
  it("lists groups with their pending counts; remove needs --yes, then frees the stale group's envelopes and payloads", async () => {
    await using nats = await startNats();
    const nc = await connect({ servers: nats.url });
    try {
      const config = { STREAM: "FILES", SUBJECT: "files.input", STREAM_REPLICAS: 1 };
      await provision(nc, config, { log, groups: ["file-producers", "abandoned"] });
      // 3 small files (inline) and 2 large ones (payload objects).
      const sizes = [100, 200, 300, 400_000, 500_000];
      for (const [i, size] of sizes.entries()) {
        await publishFile(nc, randomBytes(size), { source: "t", subject: `in/${i}.bin` });
      }
      // The live group takes everything; the abandoned one never runs again.
      const stop = new AbortController();
      let acked = 0;
      const sink = consumeFiles({ nats: nc, group: "file-producers", signal: stop.signal, log }, async () => {
        acked++;
        return Promise.resolve();
      });
      await waitFor(() => acked >= sizes.length, { message: "the live group to take every file" });
      const jsm = await jetstreamManager(nc);
      await waitFor(async () => (await jsm.consumers.info("FILES", "file-producers")).num_ack_pending === 0, {
        message: "the live group's acks",
      });
      stop.abort();
      await sink;

      const env = { NATS_URL: nats.url };
      const listed = await cli(["groups", "list", "--json"], env);
      expect(listed.code, listed.stderr).toBe(0);
      const rows = JSON.parse(listed.stdout) as GroupRow[];
      expect(rows.map((g) => [g.name, g.pending, g.ackPending])).toEqual([
        ["abandoned", 5, 0],
        ["file-producers", 0, 0],
      ]);
      expect(rows.find((g) => g.name === "abandoned")?.lastDelivery).toBeNull();
      const table = await cli(["groups", "list"], env);
      expect(table.code).toBe(0);
      expect(table.stdout).toMatch(/abandoned: pending with no member waiting/);

      // The stream and payload bucket keep everything for the abandoned group.
      expect((await jsm.streams.info("FILES")).state.messages).toBe(5);
      const payloadBytes = async () => (await jsm.streams.info("OBJ_FILES_payloads")).state.bytes;
      expect(await payloadBytes()).toBeGreaterThan(900_000);

      const refused = await cli(["groups", "remove", "abandoned"], env);
      expect(refused.code).toBe(2);
      expect(refused.stderr).toContain("5 pending");
      expect(refused.stderr).toContain("--yes");
      expect((await jsm.consumers.info("FILES", "abandoned")).num_pending).toBe(5);

      const missing = await cli(["groups", "remove", "nope", "--yes"], env);
      expect(missing.code).toBe(1);
      expect(missing.stderr).toContain('no durable group "nope"');

      const removed = await cli(["groups", "remove", "abandoned", "--yes", "--json"], env);
      expect(removed.code, removed.stderr).toBe(0);
      expect(JSON.parse(removed.stdout)).toMatchObject({ removed: "abandoned", pending: 5 });
      expect((await cli(["groups", "list", "--json"], env)).stdout).not.toContain("abandoned");
      // No group needs them any more: the interest stream lets the envelopes go.
      await waitFor(async () => (await jsm.streams.info("FILES")).state.messages === 0, {
        message: "FILES to drop the abandoned group's envelopes",
      });
      // And the payload sweep (as the services run it) finds the objects unreferenced.
      const { createPayloadJanitor } = await import("@filerelay/core/internal");
      const janitor = createPayloadJanitor(nc, { config, log, graceMs: 1, intervalMs: 0 });
      try {
        const run = await janitor.runOnce();
        expect(run.deleted).toBe(2);
      } finally {
        await janitor[Symbol.asyncDispose]();
      }
      expect(await payloadBytes()).toBeLessThan(10_000);

      // A group with a running member is not removed: the member would only create it again.
      const again = new AbortController();
      const member = consumeFiles({ nats: nc, group: "file-producers", signal: again.signal, log }, () =>
        Promise.resolve(),
      );
      try {
        await waitFor(async () => (await jsm.consumers.info("FILES", "file-producers")).num_waiting > 0, {
          message: "the running member's pull request",
        });
        const live = await cli(["groups", "remove", "file-producers", "--yes"], env);
        expect(live.code).toBe(2);
        expect(live.stderr).toMatch(/member pull request\(s\) waiting: stop its members first/);
        expect((await jsm.consumers.info("FILES", "file-producers")).name).toBe("file-producers");
      } finally {
        again.abort();
        await member;
      }
    } finally {
      await nc.close();
    }
  });

  it("`pnpm exec filerelay` works from the repository root (the workspace links the bin)", async () => {
    const run = await cli(["--version"], {}, { entry: [join(repoRoot, "node_modules/.bin/filerelay")], cwd: repoRoot });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    const help = await cli(
      ["help", "groups", "remove"],
      {},
      { entry: [join(repoRoot, "node_modules/.bin/filerelay")] },
    );
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("Usage: filerelay groups remove <group> --yes");
  });
});

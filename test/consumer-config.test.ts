import { spawnSync } from "node:child_process";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { startConsumer } from "./consumer-support.js";
import { startService } from "./support/index.js";

// Services run from packages/*/dist: `pnpm build` first (pnpm test does).
// Configuration is checked before connecting, so no NATS server is needed.

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "consumer-cfg-"));
});
afterEach(async () => {
  await chmod(join(root, "locked"), 0o755).catch(() => undefined);
  await rm(root, { recursive: true, force: true });
});

const NOWHERE = "nats://127.0.0.1:1";

describe("consumer service: bad configuration", () => {
  it("missing INPUT_DIR and a non-numeric POLL_INTERVAL_MS: exit 78 with one message naming both", async () => {
    await using svc = startConsumer({ NATS_URL: NOWHERE, POLL_INTERVAL_MS: "soon" });
    expect(await svc.exited()).toBe(78);
    const err = svc.stderr();
    expect(err).toContain("Invalid configuration (2 problems)");
    expect(err).toContain("INPUT_DIR: required");
    expect(err).toMatch(/POLL_INTERVAL_MS: expected a whole number, got "soon"/);
    expect(svc.logs().filter((l) => l.msg === "connected to NATS")).toEqual([]);
  });

  it("an INPUT_DIR that does not exist or is not a directory, and an ARCHIVE_DIR that is a file, are reported together", async () => {
    const file = join(root, "plain-file");
    await writeFile(file, "x");
    {
      await using svc = startConsumer({
        NATS_URL: NOWHERE,
        INPUT_DIR: join(root, "missing"),
        ARCHIVE_DIR: file,
        CONCURRENCY: "0",
      });
      expect(await svc.exited()).toBe(78);
      // zod problems come first; the directory checks run once the values parse.
      expect(svc.stderr()).toMatch(/CONCURRENCY: expected a number from 1 to 1024, got 0/);
    }
    {
      await using svc = startConsumer({ NATS_URL: NOWHERE, INPUT_DIR: join(root, "missing"), ARCHIVE_DIR: file });
      expect(await svc.exited()).toBe(78);
      expect(svc.stderr()).toContain("Invalid configuration (2 problems)");
      expect(svc.stderr()).toContain(`INPUT_DIR: ${join(root, "missing")} does not exist`);
      expect(svc.stderr()).toContain(`ARCHIVE_DIR: ${file} is not a directory`);
    }
    {
      await using svc = startConsumer({ NATS_URL: NOWHERE, INPUT_DIR: file });
      expect(await svc.exited()).toBe(78);
      expect(svc.stderr()).toContain(`INPUT_DIR: ${file} is not a directory`);
    }
  });

  it("an unreadable INPUT_DIR: exit 78 naming it", async (ctx) => {
    // Root reads everything: as root, run the service as nobody where nobody can run node.
    const asRoot = process.getuid?.() === 0;
    const nobody = { uid: 65534, gid: 65534 };
    if (asRoot && spawnSync(process.execPath, ["-e", "0"], { ...nobody, cwd: "/" }).status !== 0) {
      ctx.skip(`uid 65534 cannot run ${process.execPath}`);
    }
    await chmod(root, 0o755);
    const locked = join(root, "locked");
    await mkdir(locked);
    await chmod(locked, 0o000);
    const env = { NATS_URL: NOWHERE, INPUT_DIR: locked };
    await using svc = asRoot ? startService("consumer", env, nobody) : startConsumer(env);
    expect(await svc.exited()).toBe(78);
    expect(svc.stderr()).toContain(`INPUT_DIR: ${locked} is not readable (EACCES)`);
  });
});

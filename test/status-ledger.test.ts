import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { chmod, chown, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { spawnSync } from "node:child_process";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { FileRecord } from "@filerelay/core";
import {
  runCli,
  runCliJson,
  serviceEntry,
  startNats,
  startS3,
  startService,
  waitFor,
  type RunningService,
  type S3Server,
} from "./support/index.js";

/**
 * The status ledger end to end (DESIGN §8): a consumer and two producer groups
 * (fs and s3) record each file's life; `filerelay files` answers where each
 * file is, and the answer survives SIGKILL of every service and the broker.
 */

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "status-ledger-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const sha256File = async (path: string) => {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest("hex");
};

interface Services {
  consumer: RunningService;
  fs: RunningService;
  s3: RunningService;
}

function startAll(natsUrl: string, s3: S3Server): Services {
  const consumer = startService("consumer", {
    NATS_URL: natsUrl,
    INPUT_DIR: join(root, "input"),
    ARCHIVE_DIR: join(root, "archive"),
    SOURCE: "it",
    SINK_GROUPS: "file-producers,s3-producers",
    POLL_INTERVAL_MS: "250",
    STABILITY_MS: "300",
    LOG_LEVEL: "info",
  });
  const fs = startService("producer", {
    NATS_URL: natsUrl,
    PRODUCER_GROUP: "file-producers",
    OUTPUT_DIR: join(root, "out"),
    RETRY_BACKOFF_MS: "100",
    LOG_LEVEL: "info",
  });
  const s3p = startService("producer", {
    NATS_URL: natsUrl,
    PRODUCER_GROUP: "s3-producers",
    SINK: "s3",
    ...s3.env(),
    S3_PREFIX: "ledger/",
    // Text files are refused by this group: they must show up as failed.
    ALLOWED_CONTENT_TYPES: "application/octet-stream",
    RETRY_BACKOFF_MS: "100",
    LOG_LEVEL: "info",
  });
  return { consumer, fs, s3: s3p };
}

async function ready(s: Services): Promise<void> {
  await s.consumer.waitForLog((l) => l.msg === "consumer started", 30_000, "consumer started");
  await Promise.all(
    [s.fs, s.s3].map((p) => p.waitForLog((l) => l.msg === "consuming files", 30_000, `${p.name} consuming`)),
  );
}

const FINAL = new Set(["delivered", "failed", "error"]);

describe("status ledger: where is my file?", () => {
  it("records delivery locations per group, a refused group as failed, and answers the same after SIGKILL of everything", async () => {
    await using nats = await startNats();
    await using s3 = await startS3();
    await mkdir(join(root, "input"), { recursive: true });
    const cwd = join(root, "cwd");
    await mkdir(cwd);
    const env = { NATS_URL: nats.url };
    let services = startAll(nats.url, s3);
    try {
      await ready(services);
      const files = {
        "small.bin": randomBytes(2000),
        // Over INLINE_MAX_BYTES: through the Object Store, with in_progress entries.
        "sub/big.bin": randomBytes(600_000),
        "notes.txt": Buffer.from("plain text the s3 group refuses\n"),
      };
      for (const [rel, content] of Object.entries(files)) {
        await mkdir(join(root, "input", rel, ".."), { recursive: true });
        await writeFile(join(root, "input", rel), content);
      }

      const show = (rel: string) =>
        runCliJson<FileRecord>(["files", "show", "--source", "it", "--path", rel], env, cwd);
      const records = new Map<string, FileRecord>();
      await waitFor(
        async () => {
          for (const rel of Object.keys(files)) {
            const run = await runCli(["files", "show", "--source", "it", "--path", rel, "--json"], env, cwd);
            if (run.code !== 0) return false;
            const r = JSON.parse(run.stdout) as FileRecord;
            // Final once both groups have their say.
            if (!FINAL.has(r.state) || Object.keys(r.deliveries).length < 2) return false;
            records.set(rel, r);
          }
          return true;
        },
        { timeoutMs: 90_000, intervalMs: 500, message: "every file in a final state with both groups recorded" },
      );

      for (const rel of ["small.bin", "sub/big.bin"]) {
        const r = records.get(rel)!;
        const want = createHash("sha256")
          .update(files[rel as keyof typeof files])
          .digest("hex");
        expect(r).toMatchObject({ state: "delivered", source: "it", subject: rel, sha256: want });
        expect(r.size).toBe(files[rel as keyof typeof files].length);
        expect(r.events.map((e) => e.event)).toEqual(expect.arrayContaining(["detected", "published", "delivered"]));
        // The fs group's location is the real output file.
        const fsLoc = r.deliveries["file-producers"]?.location ?? "";
        expect(fsLoc).toMatch(/^file:\/\//);
        expect(await sha256File(fileURLToPath(fsLoc))).toBe(want);
        // The s3 group's location is the real object.
        const s3Loc = r.deliveries["s3-producers"]?.location ?? "";
        expect(s3Loc.startsWith(`s3://${s3.bucket}/ledger/`)).toBe(true);
        const obj = await s3.describe(s3Loc.slice(`s3://${s3.bucket}/`.length));
        expect(obj?.sha256).toBe(want);
        expect(r.deliveries["file-producers"]?.attempts).toBe(1);
      }
      const notes = records.get("notes.txt")!;
      expect(notes.state).toBe("failed");
      expect(notes.deliveries["s3-producers"]).toMatchObject({ state: "failed", code: "CONTENT_TYPE_NOT_ALLOWED" });
      expect(notes.deliveries["file-producers"]?.state).toBe("delivered");

      // Queries by state and by id find the same records.
      const failed = await runCliJson<{ files: FileRecord[] }>(["files", "list", "--state", "failed"], env, cwd);
      expect(failed.files.map((f) => f.id)).toEqual([notes.id]);
      expect(failed.files[0]?.deliveries["file-producers"]?.state).toBe("delivered");
      const delivered = await runCliJson<{ files: FileRecord[] }>(
        ["files", "list", "--state", "delivered", "--source", "it"],
        env,
        cwd,
      );
      expect(delivered.files.map((f) => f.subject).sort()).toEqual(["small.bin", "sub/big.bin"]);
      const byId = await runCliJson<FileRecord>(["files", "show", notes.id], env, cwd);
      expect(byId.deliveries).toEqual(notes.deliveries);
      const human = await runCli(["files", "show", notes.id], env, cwd);
      expect(human.code).toBe(0);
      expect(human.stdout).toContain("CONTENT_TYPE_NOT_ALLOWED");
      expect(human.stdout).toContain("timeline:");
      const all = await runCli(["files", "list"], env, cwd);
      expect(all.stdout).toContain("notes.txt");

      // SIGKILL every service and the broker; after the restart the ledger answers the same.
      await Promise.all([services.consumer.kill(), services.fs.kill(), services.s3.kill()]);
      await nats.restart();
      services = startAll(nats.url, s3);
      await ready(services);
      for (const [rel, before] of records) {
        const after = await show(rel);
        expect(after.state, rel).toBe(before.state);
        expect(after.deliveries, rel).toEqual(before.deliveries);
        expect(after.id, rel).toBe(before.id);
      }
      const failedAfter = await runCliJson<{ files: FileRecord[] }>(["files", "list", "--state", "failed"], env, cwd);
      expect(failedAfter.files.map((f) => f.id)).toEqual([notes.id]);
    } finally {
      await Promise.all([services.consumer.kill(), services.fs.kill(), services.s3.kill()]);
    }
  });

  it("shows a file the consumer cannot read as error, with its code and ERROR_DIR copy", async (ctx) => {
    const nobody = { uid: 65534, gid: 65534 };
    const probe = spawnSync(
      process.execPath,
      ["-e", "require('fs').accessSync(process.argv[1])", serviceEntry("consumer")],
      { ...nobody, cwd: "/", encoding: "utf8" },
    );
    if (probe.status !== 0) ctx.skip(`uid 65534 cannot run ${process.execPath} on this checkout`);
    await using nats = await startNats();
    const input = join(root, "input");
    await mkdir(input, { recursive: true });
    for (const d of [root, input]) await chown(d, nobody.uid, nobody.gid);
    await writeFile(join(input, "secret.csv"), "root only\n", { mode: 0o600 });
    await chmod(join(input, "secret.csv"), 0o600);
    await using consumer = startService(
      "consumer",
      {
        NATS_URL: nats.url,
        INPUT_DIR: input,
        ERROR_DIR: join(root, "error"),
        SOURCE: "locked",
        POLL_INTERVAL_MS: "250",
        STABILITY_MS: "200",
        RETRY_BACKOFF_MS: "50",
        MAX_RETRIES: "1",
      },
      nobody,
    );
    await consumer.waitForLog((l) => l.outcome === "failed" && l.path === "secret.csv", 30_000, "secret.csv fails");
    const cwd = join(root, "cwd");
    await mkdir(cwd);
    const r = await runCliJson<FileRecord>(
      ["files", "show", "--source", "locked", "--path", "secret.csv"],
      { NATS_URL: nats.url },
      cwd,
    );
    expect(r.state).toBe("error");
    expect(r.error?.code).toBe("FILE_READ_FAILED");
    expect(r.error?.reason).toMatch(/EACCES|permission denied/i);
    expect(r.error?.attempts).toBe(2);
    // Where the operator finds it.
    expect(r.error?.location).toMatch(/^file:\/\/.*\/error\/\d{4}-\d{2}-\d{2}\/secret\.csv$/);
    const errors = await runCliJson<{ files: FileRecord[] }>(
      ["files", "list", "--state", "error"],
      { NATS_URL: nats.url },
      cwd,
    );
    expect(errors.files.map((f) => f.subject)).toEqual(["secret.csv"]);
  });

  it("refuses bad arguments before connecting, and says when the ledger does not exist", async () => {
    const cwd = join(root, "cwd");
    await mkdir(cwd);
    const bad = await runCli(["files", "list", "--state", "lost"], { NATS_URL: "nats://127.0.0.1:1" }, cwd);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--state must be one of received, published, delivered, failed, error");
    const since = await runCli(["files", "list", "--since", "yesterday"], { NATS_URL: "nats://127.0.0.1:1" }, cwd);
    expect(since.code).toBe(2);
    const show = await runCli(["files", "show"], { NATS_URL: "nats://127.0.0.1:1" }, cwd);
    expect(show.code).toBe(2);
    expect(show.stderr).toContain("give either an <id> or --source S --path P");
    await using nats = await startNats();
    const none = await runCli(["files", "list"], { NATS_URL: nats.url }, cwd);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain("FILES_STATUS does not exist");
  });
});

import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import {
  startNats,
  startS3,
  startService,
  testPayload,
  waitFor,
  type LogLine,
  type RunningService,
  type S3Server,
} from "./support/index.js";

/**
 * End to end with SINK=s3: consumer → NATS → 2 producers (one group) → S3
 * (s3rver by default). Services run from packages/*\/dist: `pnpm build` first.
 */

const MiB = 1024 * 1024;
const PREFIX = "e2e/";

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "filerelay-s3-e2e-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

interface InputFile {
  rel: string;
  size: number;
  sha256: string;
}

/** Writes `count` files into INPUT_DIR: mostly small (inline), some > 256 KiB (object store), one multipart-sized. */
async function writeInputs(input: string, count: number, tag: string): Promise<InputFile[]> {
  const files: InputFile[] = [];
  for (let i = 0; i < count; i++) {
    const size = i === 0 ? 12 * MiB : i % 8 === 0 ? 300 * 1024 + i : 1000 + i * 37;
    const rel = i % 3 === 0 ? `sub/${tag}-${i}.bin` : `${tag}-${i}.bin`;
    const payload = testPayload(size, `${tag}-${i}`);
    const chunks: Buffer[] = [];
    for await (const chunk of payload.open()) chunks.push(chunk as Buffer);
    await mkdir(join(input, "sub"), { recursive: true });
    await writeFile(join(input, ...rel.split("/")), Buffer.concat(chunks));
    files.push({ rel, size, sha256: payload.sha256 });
  }
  return files;
}

function producerEnv(natsUrl: string, s3: S3Server, extra: Record<string, string> = {}): Record<string, string> {
  return {
    NATS_URL: natsUrl,
    SINK: "s3",
    ...s3.env(),
    S3_PREFIX: PREFIX,
    S3_PART_SIZE: "5MiB",
    S3_QUEUE_SIZE: "2",
    CONCURRENCY: "2",
    RETRY_BACKOFF_MS: "500",
    HTTP_PORT: "0",
    ...extra,
  };
}

function consumerEnv(natsUrl: string, input: string, archive: string): Record<string, string> {
  return {
    NATS_URL: natsUrl,
    INPUT_DIR: input,
    ARCHIVE_DIR: archive,
    SOURCE: "it",
    POLL_INTERVAL_MS: "250",
    STABILITY_MS: "300",
    HTTP_PORT: "0",
  };
}

/** The last log lines of each service, for failure messages. */
function tails(...services: RunningService[]): string {
  return services
    .map(
      (svc) =>
        `--- ${svc.name} ${svc.pid} (exit ${String(svc.proc.exitCode)})\n` +
        svc
          .logs()
          .slice(-15)
          .map((l) => JSON.stringify(l).slice(0, 400))
          .join("\n") +
        `\n${svc.stderr().slice(-1500)}`,
    )
    .join("\n");
}

async function waitForKeys(s3: S3Server, n: number, timeoutMs: number, services: RunningService[]): Promise<void> {
  try {
    await waitFor(async () => (await s3.listKeys(PREFIX)).length >= n, {
      timeoutMs,
      message: `${n} objects in the bucket`,
    });
  } catch (err) {
    const have = (await s3.listKeys(PREFIX)).length;
    throw new Error(`${(err as Error).message}; have ${have}\n${tails(...services)}`, { cause: err });
  }
}

const outcomeLines = (svc: RunningService): LogLine[] =>
  svc.logs().filter((l) => typeof l.outcome === "string" && typeof l.fileId === "string" && "location" in l);

const todayKeyDir = (d = new Date()) =>
  `${d.getUTCFullYear()}/${String(d.getUTCMonth() + 1).padStart(2, "0")}/${String(d.getUTCDate()).padStart(2, "0")}`;

/** Every input file is in the bucket exactly once, under the documented key, with identical bytes. */
async function expectLandedOnce(s3: S3Server, files: InputFile[]): Promise<void> {
  const keys = await s3.listKeys(PREFIX);
  expect(keys).toHaveLength(files.length);
  // Dates are UTC at write time: a run that crosses midnight writes under either day.
  const days = [todayKeyDir(new Date(Date.now() - 3_600_000)), todayKeyDir()].join("|");
  const keyPattern = new RegExp(`^${PREFIX}(${days})/[^/]+-[0-9a-f]{8}\\.bin$`);
  const byName = new Map(files.map((f) => [f.rel.split("/").pop() ?? f.rel, f]));
  const seen = new Set<string>();
  for (const key of keys) {
    expect(key).toMatch(keyPattern);
    const obj = await s3.describe(key);
    const name = decodeURIComponent(obj?.metadata["filerelay-filename"] ?? "");
    const file = byName.get(name);
    expect(file, `${key} (${name}) is one of the input files`).toBeDefined();
    expect(obj).toMatchObject({ size: file?.size, sha256: file?.sha256 });
    expect(obj?.metadata["filerelay-sha256"]).toBe(file?.sha256);
    // The default template: {{.Name}}-{{.ShortID}}{{.Ext}}.
    const shortId = (obj?.metadata["filerelay-id"] ?? "").replace(/-/g, "").slice(0, 8);
    expect(key.split("/").pop()).toBe(`${name.replace(/\.bin$/, "")}-${shortId}.bin`);
    seen.add(name);
  }
  expect(seen.size).toBe(files.length);
}

describe("end to end with SINK=s3", () => {
  test("consumer → NATS → 2 producers → S3: every file once, identical sha256, keys as documented, both producers worked", async () => {
    await using nats = await startNats();
    await using s3 = await startS3();
    const input = join(root, "in");
    await mkdir(input, { recursive: true });
    const files = await writeInputs(input, 40, "a");

    await using p1 = startService("producer", producerEnv(nats.url, s3));
    await using p2 = startService("producer", producerEnv(nats.url, s3));
    await using consumer = startService("consumer", consumerEnv(nats.url, input, join(root, "archive")));

    await waitForKeys(s3, files.length, 60_000, [p1, p2, consumer]);
    await expectLandedOnce(s3, files);
    const lines = [...outcomeLines(p1), ...outcomeLines(p2)];
    expect(lines.filter((l) => l.outcome === "written")).toHaveLength(files.length);
    expect(outcomeLines(p1).length, "producer 1 did part of the work").toBeGreaterThan(0);
    expect(outcomeLines(p2).length, "producer 2 did part of the work").toBeGreaterThan(0);
    expect(consumer.proc.exitCode).toBeNull();
  });

  test.skipIf(!!process.env.FILERELAY_TEST_S3_ENDPOINT || process.env.FILERELAY_TEST_DOCKER === "1")(
    "S3 endpoint down for 30 s mid-run: no loss, no duplicate keys, everything lands once it is back",
    async () => {
      await using nats = await startNats();
      await using s3 = await startS3();
      const input = join(root, "in");
      await mkdir(input, { recursive: true });
      const first = await writeInputs(input, 10, "before");

      // Default MAX_DELIVER (5): an outage is retried for as long as it lasts (SINK_UNAVAILABLE
      // does not use up a file's deliveries), so nothing is dead-lettered by a 30 s outage.
      const env = producerEnv(nats.url, s3);
      await using p1 = startService("producer", env);
      await using p2 = startService("producer", env);
      await using consumer = startService("consumer", consumerEnv(nats.url, input, join(root, "archive")));
      await waitForKeys(s3, first.length, 60_000, [p1, p2, consumer]);

      await s3.stop();
      const downAt = Date.now();
      const during = await writeInputs(input, 12, "during");
      // The producers see the outage: failed attempts are logged as retries with the outage code.
      await waitFor(
        () => [...p1.logs(), ...p2.logs()].some((l) => l.outcome === "retry" && l.code === "SINK_UNAVAILABLE"),
        { timeoutMs: 60_000, message: "producers to report S3 failures" },
      );
      // The outage length is the point of this test, not a synchronization: hold it for 30 s.
      await waitFor(() => Date.now() - downAt >= 30_000, { timeoutMs: 40_000, intervalMs: 500 });
      await s3.restart();

      const all = [...first, ...during];
      await waitForKeys(s3, all.length, 120_000, [p1, p2, consumer]);
      await expectLandedOnce(s3, all);
      const dead = [...p1.logs(), ...p2.logs()].filter((l) => l.outcome === "dead-lettered");
      expect(dead, "nothing was dead-lettered").toEqual([]);
      expect(consumer.proc.exitCode).toBeNull();
    },
  );
});

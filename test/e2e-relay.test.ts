import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { startNats, startService, waitFor, type RunningService } from "./support/index.js";
import { fileSha, listFiles, outcomeLines, producerEnv, sha256, todayDir } from "./producer-support.js";

// consumer → NATS → producers, all as built services (`pnpm build` first).

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "e2e-relay-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const consumerEnv = (natsUrl: string, extra: Record<string, string> = {}) => ({
  NATS_URL: natsUrl,
  INPUT_DIR: join(root, "input"),
  ARCHIVE_DIR: join(root, "archive"),
  ERROR_DIR: join(root, "consumer-error"),
  SOURCE: "api",
  STABILITY_MS: "200",
  POLL_INTERVAL_MS: "500",
  ...extra,
});

const published = (svc: RunningService) => svc.logs().filter((l) => l.msg === "file published");

/** Writes `n` files with distinct content (a few above INLINE_MAX_BYTES, so via the Object Store). */
async function dropFiles(dir: string, n: number, prefix: string): Promise<Map<string, string>> {
  const bySha = new Map<string, string>();
  for (let i = 0; i < n; i++) {
    const rel = `${prefix}${i % 3 === 0 ? "sub/" : ""}file-${i}.${i % 2 === 0 ? "csv" : "bin"}`;
    const size = i % 50 === 7 ? 300_000 + i : 100 + ((i * 37) % 4000);
    const content = Buffer.concat([Buffer.from(`${rel}\n`), randomBytes(size)]);
    await mkdir(dirname(join(dir, rel)), { recursive: true });
    await writeFile(join(dir, rel), content);
    bySha.set(sha256(content), rel);
  }
  return bySha;
}

describe("end to end: consumer → NATS → producers (fs)", () => {
  it("relays 300 files to 2 producers: each lands once, with the right bytes; both worked; all archived", async () => {
    await using nats = await startNats();
    const out = join(root, "output");
    await mkdir(join(root, "input"), { recursive: true });
    await using consumer = startService("consumer", consumerEnv(nats.url, { LOG_LEVEL: "info" }));
    await consumer.waitForLog((l) => l.msg === "consumer started");
    const penv = producerEnv(nats.url, { OUTPUT_DIR: out, LOG_LEVEL: "info" });
    await using p1 = startService("producer", penv);
    await using p2 = startService("producer", penv);
    await Promise.all([p1, p2].map((p) => p.waitForLog((l) => l.msg === "consuming files", 30_000, "producer ready")));

    const expected = await dropFiles(join(root, "input"), 300, "");
    const total = () => outcomeLines(p1).length + outcomeLines(p2).length;
    await waitFor(() => total() >= 300, { timeoutMs: 120_000, message: `300 files written (have ${total()})` });
    // Every file archived by the consumer (after its PubAck).
    const day = new Date().toISOString().slice(0, 10);
    await waitFor(async () => (await listFiles(join(root, "archive"))).length >= 300, {
      timeoutMs: 60_000,
      message: "300 archived files",
    });

    const written = await listFiles(out);
    expect(written).toHaveLength(300);
    const dateDir = todayDir();
    // The default template keeps the original name: <name>-<8 hex of ce-id><ext>.
    expect(written.every((p) => p.startsWith(`${dateDir}/`))).toBe(true);
    const seen = new Set<string>();
    for (const p of written) {
      const sha = await fileSha(join(out, p));
      expect(expected.has(sha), p).toBe(true);
      expect(seen.has(sha), `second copy ${p}`).toBe(false);
      seen.add(sha);
      // The name and extension survive the default template.
      const source = expected.get(sha)!.split("/").pop()!;
      const dot = source.lastIndexOf(".");
      const name = p.split("/").pop()!;
      expect(name.startsWith(`${source.slice(0, dot)}-`) && name.endsWith(source.slice(dot)), p).toBe(true);
      expect(name.length, p).toBe(source.length + 9);
    }
    expect(seen.size).toBe(300);

    const lines = [...outcomeLines(p1), ...outcomeLines(p2)];
    expect(lines.every((l) => l.outcome === "written")).toBe(true);
    expect(new Set(lines.map((l) => l.fileId)).size).toBe(300);
    expect(outcomeLines(p1).length).toBeGreaterThan(0);
    expect(outcomeLines(p2).length).toBeGreaterThan(0);

    const archived = await listFiles(join(root, "archive"));
    expect(archived).toEqual([...expected.values()].map((rel) => `${day}/${rel}`).sort());
    expect(await listFiles(join(root, "input"))).toEqual([]);
    expect(published(consumer)).toHaveLength(300);

    expect(await p1.stop()).toBe(0);
    expect(await p2.stop()).toBe(0);
    expect(await consumer.stop()).toBe(0);
  });

  it("delivers files published before any producer started, to every group in SINK_GROUPS", async () => {
    await using nats = await startNats();
    await mkdir(join(root, "input"), { recursive: true });
    await using consumer = startService(
      "consumer",
      consumerEnv(nats.url, { SINK_GROUPS: "file-producers,audit", LOG_LEVEL: "info" }),
    );
    await consumer.waitForLog((l) => l.msg === "consumer started");
    const expected = await dropFiles(join(root, "input"), 12, "early/");
    await waitFor(() => published(consumer).length >= 12, { timeoutMs: 60_000, message: "12 files published" });

    await using main = startService("producer", producerEnv(nats.url, { OUTPUT_DIR: join(root, "main") }));
    await using audit = startService(
      "producer",
      producerEnv(nats.url, { OUTPUT_DIR: join(root, "audit"), PRODUCER_GROUP: "audit", ORGANIZE_BY: "source" }),
    );
    for (const svc of [main, audit]) {
      await waitFor(() => outcomeLines(svc).length >= 12, { timeoutMs: 60_000, message: "12 files written" });
    }
    const mainFiles = await listFiles(join(root, "main"));
    const auditFiles = await listFiles(join(root, "audit"));
    expect(mainFiles).toHaveLength(12);
    expect(auditFiles).toHaveLength(12);
    expect(auditFiles.every((p) => /^api\/[^/]+-[0-9a-f]{8}\.[a-z]+$/.test(p))).toBe(true);
    for (const [dir, files] of [
      ["main", mainFiles],
      ["audit", auditFiles],
    ] as const) {
      const shas = new Set(await Promise.all(files.map((p) => fileSha(join(root, dir, p)))));
      expect(shas).toEqual(new Set(expected.keys()));
    }
  });
});

import { mkdir, mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  freePort,
  isPartialName,
  sha256File,
  startNats,
  startService,
  waitFor,
  walkFiles,
  writeSeededFile,
  type RunningService,
} from "./support/index.js";
import { outcomeLines, producerEnv } from "./producer-support.js";

// Issue 8, "Done when": SIGTERM during a burst → exit 0 within SHUTDOWN_TIMEOUT_MS,
// nothing lost or half-written, and a restarted process picks up the rest.
// Runs the built services (`pnpm build` first).

const SHUTDOWN_TIMEOUT_MS = 10_000;
const FILES = 300;
const MiB = 1024 * 1024;

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "ops-shutdown-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

interface Original {
  rel: string;
  sha256: string;
  size: number;
  mtimeMs: number;
}

/**
 * Writes the burst into `dir`: mostly small files, every 25th one 2–4 MiB (through
 * the Object Store, and long enough to write that some are in flight at SIGTERM).
 * Each is written under a skipped temp name and renamed into place.
 */
async function writeBurst(dir: string, tag: string): Promise<Map<string, Original>> {
  const bySha = new Map<string, Original>();
  for (let i = 0; i < FILES; i++) {
    const rel = `${i % 4 === 0 ? "sub/" : ""}${tag}-${i}.${i % 2 === 0 ? "csv" : "bin"}`;
    const size = i % 25 === 5 ? 2 * MiB + ((i * 7919) % (2 * MiB)) : 200 + ((i * 1237) % 20_000);
    const path = join(dir, rel);
    const sha256 = await writeSeededFile(path, `${tag}-${i}`, size, { via: `${path}.tmp` });
    bySha.set(sha256, { rel, sha256, size, mtimeMs: (await stat(path)).mtimeMs });
  }
  expect(bySha.size).toBe(FILES);
  return bySha;
}

/** Sends SIGTERM; returns the exit code and how long the process took to exit. */
async function sigterm(svc: RunningService): Promise<{ code: number | null; ms: number }> {
  const t0 = Date.now();
  const code = await svc.stop(SHUTDOWN_TIMEOUT_MS + 30_000);
  return { code, ms: Date.now() - t0 };
}

/** SHA-256 → output paths of every complete file under `out`; temp/partial names separately. */
async function outputTree(out: string): Promise<{ bySha: Map<string, string[]>; partial: string[] }> {
  const bySha = new Map<string, string[]>();
  const partial: string[] = [];
  for (const rel of await walkFiles(out)) {
    if (isPartialName(rel)) {
      partial.push(rel);
      continue;
    }
    const sha = await sha256File(join(out, rel));
    bySha.set(sha, [...(bySha.get(sha) ?? []), rel]);
  }
  return { bySha, partial };
}

/** Every expected file exactly once, nothing else, nothing partial. */
async function expectExactlyOnce(out: string, expected: Map<string, Original>): Promise<void> {
  const { bySha, partial } = await outputTree(out);
  expect(partial).toEqual([]);
  const unknown = [...bySha.keys()].filter((s) => !expected.has(s));
  expect(unknown, "output files that are no copy of any input").toEqual([]);
  const dups = [...bySha.entries()].filter(([, paths]) => paths.length > 1);
  expect(dups, "files written more than once").toEqual([]);
  const missing = [...expected.values()].filter((e) => !bySha.has(e.sha256)).map((e) => e.rel);
  expect(missing, "files never written").toEqual([]);
}

/** Number of complete expected files in `out` (for waiting). */
async function completeCount(out: string, expected: Map<string, Original>): Promise<number> {
  const { bySha } = await outputTree(out);
  return [...bySha.keys()].filter((s) => expected.has(s)).length;
}

const consumerEnv = (natsUrl: string, extra: Record<string, string> = {}) => ({
  NATS_URL: natsUrl,
  INPUT_DIR: join(root, "input"),
  ARCHIVE_DIR: join(root, "archive"),
  ERROR_DIR: join(root, "consumer-error"),
  SOURCE: "api",
  STABILITY_MS: "200",
  POLL_INTERVAL_MS: "500",
  LOG_LEVEL: "info",
  SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS),
  ...extra,
});

/** Archived paths relative to INPUT_DIR (ARCHIVE_DIR/YYYY-MM-DD/<rel>). */
async function archived(): Promise<string[]> {
  return (await walkFiles(join(root, "archive"))).map((p) => p.slice(p.indexOf("/") + 1)).sort();
}

const publishedPaths = (svc: RunningService) =>
  svc
    .logs()
    .filter((l) => l.msg === "file published")
    .map((l) => String(l.path));

describe("graceful shutdown during a burst", () => {
  it("producer: SIGTERM mid-burst exits 0 in time, leaves only complete files; a restarted producer writes the rest, each once", async () => {
    await using nats = await startNats();
    const input = join(root, "input");
    const out = join(root, "output");
    await mkdir(input, { recursive: true });
    const penv = producerEnv(nats.url, {
      OUTPUT_DIR: out,
      LOG_LEVEL: "info",
      SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS),
    });

    await using consumer = startService("consumer", consumerEnv(nats.url));
    await consumer.waitForLog((l) => l.msg === "consumer started", 60_000, "consumer started");
    const p1Port = await freePort();
    await using p1 = startService("producer", { ...penv, HTTP_PORT: String(p1Port) });
    await p1.waitForLog((l) => l.msg === "consuming files", 60_000, "producer ready");

    const expected = await writeBurst(input, "p");
    // SIGTERM once 40 files are written and, per the in-flight gauge, writes are under way.
    await waitFor(
      async () => {
        if (outcomeLines(p1).length < 40) return false;
        const text = await (await fetch(`http://127.0.0.1:${p1Port}/metrics`)).text();
        const m = /^filerelay_files_in_flight\{[^}]*\} (\S+)$/m.exec(text);
        return m !== null && Number(m[1]) >= 1;
      },
      { timeoutMs: 60_000, message: "40 files written and some in flight (producer filerelay_files_in_flight ≥ 1)" },
    );

    const { code, ms } = await sigterm(p1);
    expect(code, p1.stderr().slice(-2000)).toBe(0);
    expect(ms).toBeLessThan(SHUTDOWN_TIMEOUT_MS);
    // In-flight writes finished within the deadline: none was handed back for redelivery.
    expect(p1.logs().filter((l) => l.code === "SHUTDOWN")).toEqual([]);

    // What the stopped producer left: no temp file, every file complete, and exactly
    // the files it logged as written (nothing else, nothing twice).
    const written = outcomeLines(p1).filter((l) => l.outcome === "written");
    const stopped = await outputTree(out);
    expect(stopped.partial).toEqual([]);
    for (const [sha, paths] of stopped.bySha) {
      expect(expected.has(sha), `unknown or incomplete output ${paths.join(", ")}`).toBe(true);
      expect(paths, `written twice: ${expected.get(sha)?.rel}`).toHaveLength(1);
    }
    expect(new Set(stopped.bySha.keys())).toEqual(new Set(written.map((l) => String(l.sha256))));
    // Mid-burst: the stopped producer did not write everything.
    expect(stopped.bySha.size).toBeLessThan(FILES);

    await using p2 = startService("producer", penv);
    await waitFor(async () => (await completeCount(out, expected)) >= FILES, {
      timeoutMs: 75_000,
      message: `all ${FILES} files in OUTPUT_DIR after the restart`,
    });
    await waitFor(async () => (await archived()).length >= FILES, {
      timeoutMs: 30_000,
      message: `all ${FILES} files archived`,
    });
    expect(await p2.stop()).toBe(0);
    await expectExactlyOnce(out, expected);
    expect(outcomeLines(p2).filter((l) => l.outcome === "written").length + written.length).toBe(FILES);
    expect(await consumer.stop()).toBe(0);
  }, 90_000);

  it("consumer: SIGTERM mid-burst exits 0 in time, leaves unfinished files untouched; a restarted consumer publishes the rest", async () => {
    await using nats = await startNats();
    const input = join(root, "input");
    const out = join(root, "output");
    await mkdir(input, { recursive: true });

    await using producer = startService(
      "producer",
      producerEnv(nats.url, { OUTPUT_DIR: out, LOG_LEVEL: "info", SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS) }),
    );
    await producer.waitForLog((l) => l.msg === "consuming files", 60_000, "producer ready");

    // The whole burst is waiting when the consumer starts.
    const expected = await writeBurst(input, "c");
    const byRel = new Map([...expected.values()].map((e) => [e.rel, e]));

    await using c1 = startService("consumer", consumerEnv(nats.url));
    await waitFor(() => publishedPaths(c1).length >= 40, {
      timeoutMs: 60_000,
      message: `40 files published before SIGTERM (have ${publishedPaths(c1).length})`,
    });
    const { code, ms } = await sigterm(c1);
    expect(code, c1.stderr().slice(-2000)).toBe(0);
    expect(ms).toBeLessThan(SHUTDOWN_TIMEOUT_MS);

    const published = new Set(publishedPaths(c1));
    expect(published.size).toBeLessThan(FILES);
    const inArchive = await archived();
    const inInput = await walkFiles(input);
    // Nothing archived that was not published, and the archived copies are whole.
    for (const rel of inArchive) {
      expect(published.has(rel), `archived without a PubAck: ${rel}`).toBe(true);
      const dated = (await walkFiles(join(root, "archive"))).find((p) => p.endsWith(`/${rel}`));
      expect(await sha256File(join(root, "archive", dated!))).toBe(byRel.get(rel)?.sha256);
    }
    // Everything else is still in INPUT_DIR, untouched; nothing lost, nothing extra.
    expect([...inInput, ...inArchive].sort()).toEqual([...byRel.keys()].sort());
    for (const rel of inInput) {
      const orig = byRel.get(rel)!;
      expect(await sha256File(join(input, rel)), rel).toBe(orig.sha256);
      expect((await stat(join(input, rel))).mtimeMs, rel).toBe(orig.mtimeMs);
    }

    await using c2 = startService("consumer", consumerEnv(nats.url));
    await waitFor(async () => (await archived()).length >= FILES, {
      timeoutMs: 75_000,
      message: `all ${FILES} files archived after the restart`,
    });
    await waitFor(async () => (await completeCount(out, expected)) >= FILES, {
      timeoutMs: 30_000,
      message: `all ${FILES} files in OUTPUT_DIR`,
    });
    expect(await walkFiles(input)).toEqual([]);
    expect(await archived()).toEqual([...byRel.keys()].sort());
    await expectExactlyOnce(out, expected);
    expect(await c2.stop()).toBe(0);
    expect(await producer.stop()).toBe(0);
  }, 90_000);
});

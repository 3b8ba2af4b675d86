import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { startNats, waitFor } from "./support/index.js";
import {
  consumerEnv,
  consumerStarted,
  listFiles,
  makeConsumerDirs,
  openStreamReader,
  outcomes,
  sha256,
  startConsumer,
} from "./consumer-support.js";

// Services run from packages/*/dist: `pnpm build` first (pnpm test does).

const contentOf = (i: number) => `backlog file ${i}\n`;

/** `count` small files spread over `dirs` subdirectories of `root`; returns their relative paths. */
async function makeBacklog(root: string, count: number, dirs: number): Promise<string[]> {
  const rels: string[] = [];
  for (let d = 0; d < dirs; d++) await mkdir(join(root, `d${d}`), { recursive: true });
  for (let i = 0; i < count; i += 100) {
    const batch: Promise<void>[] = [];
    for (let j = i; j < Math.min(count, i + 100); j++) {
      const rel = `d${j % dirs}/f${j}.txt`;
      rels.push(rel);
      batch.push(writeFile(join(root, rel), contentOf(j)));
    }
    await Promise.all(batch);
  }
  return rels;
}

describe("consumer service: backlogs larger than the working window", () => {
  it("publishes every file of a backlog once, pausing discovery, and lets a new file in a quiet directory go first", async () => {
    await using nats = await startNats();
    await using dirs = await makeConsumerDirs();
    await using stream = await openStreamReader(nats.url);
    const FILES = 3000;
    await makeBacklog(dirs.input, FILES, 15);
    await mkdir(join(dirs.input, "quiet"));
    await using svc = startConsumer(
      consumerEnv(
        nats.url,
        { input: dirs.input },
        // Few workers: the backlog lasts long enough to drop a file while it drains.
        { DELETE_AFTER_PROCESSING: "true", DISCOVERY_WINDOW: "40", CONCURRENCY: "2" },
      ),
    );
    await consumerStarted(svc);
    await waitFor(async () => (await stream.count()) >= 100, { timeoutMs: 60_000, message: "the backlog draining" });
    await writeFile(join(dirs.input, "quiet", "late.txt"), "late\n");
    const dropped = Date.now();
    const late = await svc.waitForLog((l) => l.msg === "file published" && l.path === "quiet/late.txt", 60_000);
    const latencyMs = Date.now() - dropped;
    const publishedBefore = outcomes(svc, "published").length;
    // It did not wait for the backlog: most of it was still to come.
    expect(publishedBefore).toBeLessThan(FILES);
    expect(late.sha256).toBe(sha256("late\n"));
    expect(latencyMs).toBeLessThan(15_000);

    const msgs = await stream.waitFor(FILES + 1, 180_000);
    expect(msgs).toHaveLength(FILES + 1);
    const subjects = new Set(msgs.map((m) => m.headers["ce-subject"]));
    expect(subjects.size).toBe(FILES + 1);
    for (const m of msgs) {
      const rel = m.headers["ce-subject"]!;
      const i = /f(\d+)\.txt$/.exec(rel)?.[1];
      if (i !== undefined) expect(m.headers["ce-sha256"]).toBe(sha256(contentOf(Number(i))));
    }
    expect(outcomes(svc, "published")).toHaveLength(FILES + 1);
    expect(await listFiles(dirs.input)).toEqual([]);
    // The window was full at times: discovery waited instead of taking in the whole backlog.
    expect(svc.logs().some((l) => l.msg === "working window full; discovery paused")).toBe(true);
  }, 240_000);

  it("a restart in the middle of a backlog goes on without publishing or reading again what was done", async () => {
    await using nats = await startNats();
    await using dirs = await makeConsumerDirs();
    await using stream = await openStreamReader(nats.url);
    const FILES = 2000;
    await makeBacklog(dirs.input, FILES, 10);
    const env = consumerEnv(
      nats.url,
      { input: dirs.input },
      { DELETE_AFTER_PROCESSING: "true", DISCOVERY_WINDOW: "50", CONCURRENCY: "2" },
    );
    let first: number;
    {
      await using svc = startConsumer(env);
      await consumerStarted(svc);
      await waitFor(async () => (await stream.count()) >= 300, { timeoutMs: 60_000, message: "part of the backlog" });
      expect(await svc.stop()).toBe(0);
      first = outcomes(svc, "published").length;
    }
    expect(first).toBeLessThan(FILES);
    await using again = startConsumer(env);
    await consumerStarted(again);
    const msgs = await stream.waitFor(FILES, 180_000);
    await waitFor(async () => (await listFiles(dirs.input)).length === 0, { message: "every source deleted" });
    expect(new Set(msgs.map((m) => m.headers["ce-subject"])).size).toBe(FILES);
    expect(msgs).toHaveLength(FILES);
    const second = outcomes(again, "published").length;
    const skipped = outcomes(again, "skipped").length;
    expect(first + second).toBe(FILES);
    // At most the files published but not yet deleted when it stopped are read again (then found published).
    expect(skipped).toBeLessThanOrEqual(8);
  }, 240_000);

  it("left in place: a backlog larger than the window is published once, polls leave it be, a change is published again", async () => {
    await using nats = await startNats();
    await using dirs = await makeConsumerDirs();
    await using stream = await openStreamReader(nats.url);
    const FILES = 300;
    const rels = await makeBacklog(dirs.input, FILES, 3);
    await using svc = startConsumer(consumerEnv(nats.url, { input: dirs.input }, { DISCOVERY_WINDOW: "20" }));
    await consumerStarted(svc);
    await stream.waitFor(FILES, 120_000);
    // Several full polls later (POLL_INTERVAL_MS=250), nothing was published again.
    const polls = () => svc.logs().filter((l) => l.msg === "scan done").length;
    const after = polls();
    await svc.waitForLog(() => polls() >= after + 3, 60_000, "three more polls");
    expect(await stream.count()).toBe(FILES);
    expect(outcomes(svc, "published")).toHaveLength(FILES);
    expect((await listFiles(dirs.input)).length).toBe(FILES);

    const changed = rels[123]!;
    await writeFile(join(dirs.input, changed), "a new version\n");
    const msgs = await stream.waitFor(FILES + 1, 60_000);
    expect(msgs[FILES]!.headers["ce-subject"]).toBe(changed);
    expect(msgs[FILES]!.headers["ce-sha256"]).toBe(sha256(await readFile(join(dirs.input, changed))));
    const later = polls();
    await svc.waitForLog(() => polls() >= later + 2, 60_000, "two more polls");
    expect(await stream.count()).toBe(FILES + 1);
  }, 240_000);
});

import { describe, expect, it } from "vitest";
import { startNats } from "./support/index.js";
import {
  consumerEnv,
  consumerStarted,
  listFiles,
  makeConsumerDirs,
  openStreamReader,
  outcomes,
  startConsumer,
  todayUtc,
  writeRel,
} from "./consumer-support.js";

// Services run from packages/*/dist: `pnpm build` first (pnpm test does).

describe("consumer service: two replicas on one directory", () => {
  it("publishes each of 500 files exactly once between them", async () => {
    await using nats = await startNats();
    await using dirs = await makeConsumerDirs();
    await using stream = await openStreamReader(nats.url);
    const env = consumerEnv(nats.url, dirs, { CONCURRENCY: "8", POLL_INTERVAL_MS: "200" });
    await using a = startConsumer(env);
    await using b = startConsumer(env);
    await Promise.all([consumerStarted(a), consumerStarted(b)]);

    const rels: string[] = [];
    for (let i = 0; i < 500; i++) {
      const rel = `d${i % 10}/file-${i}.txt`;
      rels.push(rel);
      await writeRel(dirs.input, rel, `file ${i}\n`);
    }
    const msgs = await stream.waitFor(500, 90_000);
    const published = () => [...outcomes(a, "published"), ...outcomes(b, "published")];
    await a.waitForLog(() => published().length >= 500, 30_000, "500 published lines across both replicas");

    // JetStream would drop a second publish of the same ce-id silently; the
    // replicas' own outcome lines show that none was even attempted.
    expect(published()).toHaveLength(500);
    expect(published().filter((l) => l.duplicate === true)).toEqual([]);
    expect(new Set(published().map((l) => l.path)).size).toBe(500);
    expect(msgs).toHaveLength(500);
    expect(new Set(msgs.map((m) => m.headers["ce-subject"])).size).toBe(500);
    expect(await listFiles(dirs.archive)).toEqual(rels.map((r) => `${todayUtc()}/${r}`).sort());
    expect(await listFiles(dirs.input)).toEqual([]);
    expect(await listFiles(dirs.error)).toEqual([]);
    const [ea, eb] = await Promise.all([a.stop(), b.stop()]);
    expect([ea, eb]).toEqual([0, 0]);
  });
});

import { mkdir, readdir, rename, stat, writeFile } from "node:fs/promises";
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
  startConsumer,
} from "./consumer-support.js";

// Services run from packages/*/dist: `pnpm build` first (pnpm test does).

const N = 10_000;
const CONCURRENCY = 8;

async function openFds(pid: number): Promise<number> {
  return (await readdir(`/proc/${pid}/fd`)).length;
}

describe("consumer service: a burst of 10,000 files", () => {
  it.skipIf(process.platform !== "linux")(
    "publishes all of them once, oldest mtime first, without holding more than CONCURRENCY files open",
    { timeout: 180_000 },
    async () => {
      await using nats = await startNats();
      await using dirs = await makeConsumerDirs();
      for (let d = 0; d < 10; d++) await mkdir(join(dirs.input, `d${d}`));
      // Written before the consumer starts: the whole burst is there at the first scan.
      const body = Buffer.alloc(512, 0x61);
      const mtimes = new Map<string, number>();
      for (let i = 0; i < N; i++) {
        const rel = `d${i % 10}/f${i}.txt`;
        await writeFile(join(dirs.input, rel), body);
        mtimes.set(rel, (await stat(join(dirs.input, rel))).mtimeMs);
      }
      await using stream = await openStreamReader(nats.url);
      // Oldest mtime first holds within the working window (a larger backlog is
      // taken in window by window, in directory order): here it holds the burst.
      await using svc = startConsumer(
        consumerEnv(nats.url, dirs, {
          CONCURRENCY: String(CONCURRENCY),
          LOG_LEVEL: "info",
          POLL_INTERVAL_MS: "2000",
          DISCOVERY_WINDOW: String(N),
        }),
      );
      await consumerStarted(svc);
      const baseline = await openFds(svc.pid);
      let maxFds = baseline;
      await waitFor(
        async () => {
          maxFds = Math.max(maxFds, await openFds(svc.pid));
          return (await stream.count()) >= N;
        },
        { timeoutMs: 150_000, intervalMs: 20, message: `${N} messages` },
      );
      await svc.waitForLog(() => outcomes(svc, "published").length >= N, 30_000, `${N} published lines`);
      expect(outcomes(svc, "published")).toHaveLength(N);
      expect(new Set(outcomes(svc, "published").map((l) => l.path)).size).toBe(N);
      // File handles: at most CONCURRENCY source files on top of the process's own (sockets, watches).
      expect(maxFds - baseline).toBeLessThanOrEqual(CONCURRENCY + 2);
      // Oldest mtime first, in the stream (the order sinks receive them). Files
      // are published CONCURRENCY at a time, whose PubAcks may come in any
      // order: compare with a window.
      const order = (await stream.read()).map((m) => mtimes.get(String(m.headers["ce-subject"]))!);
      expect(order).toHaveLength(N);
      let inversions = 0;
      for (let i = CONCURRENCY; i < order.length; i++) if (order[i]! < order[i - CONCURRENCY]!) inversions++;
      expect(inversions).toBe(0);
      expect(await listFiles(dirs.input)).toEqual([]);
      expect(await svc.stop()).toBe(0);
    },
  );

  it.skipIf(process.platform !== "linux")(
    "LARGE_FILE_CONCURRENCY=1: small files flow at CONCURRENCY while Object Store uploads go one at a time",
    { timeout: 120_000 },
    async () => {
      await using nats = await startNats();
      await using dirs = await makeConsumerDirs();
      await using stream = await openStreamReader(nats.url);
      await using svc = startConsumer(
        consumerEnv(nats.url, dirs, { CONCURRENCY: "8", LARGE_FILE_CONCURRENCY: "1", INLINE_MAX_BYTES: "65536" }),
      );
      await consumerStarted(svc);
      const baseline = await openFds(svc.pid);
      // Written elsewhere and renamed in, so all are there (and stable) at once.
      const staging = join(dirs.root, "staging-large");
      await mkdir(staging, { recursive: true });
      for (let i = 0; i < 8; i++) await writeFile(join(staging, `big${i}.bin`), Buffer.alloc(8 * 1024 * 1024, i));
      for (let i = 0; i < 40; i++) await writeFile(join(staging, `small${i}.txt`), `small ${i}\n`);
      await rename(staging, join(dirs.input, "batch"));
      let maxFds = baseline;
      await waitFor(
        async () => {
          maxFds = Math.max(maxFds, await openFds(svc.pid));
          return (await stream.count()) >= 48;
        },
        { timeoutMs: 90_000, intervalMs: 5, message: "48 messages" },
      );
      const envelopes = await stream.read();
      expect(envelopes).toHaveLength(48);
      expect(envelopes.filter((m) => m.headers["ce-payload"]?.startsWith("object:"))).toHaveLength(8);
      // Source files of uploads are the only ones held open (small files are read and closed at once):
      // one upload at a time, not CONCURRENCY of them.
      expect(maxFds - baseline).toBeLessThanOrEqual(1 + 2);
      expect(await svc.stop()).toBe(0);
    },
  );
});

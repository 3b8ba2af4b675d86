/**
 * Soak (issue 9 item 8), opt-in: FILERELAY_SOAK=1 (the lead's `pnpm test:soak`).
 *
 * A steady FILERELAY_SOAK_RATE files/s (default 50) for FILERELAY_SOAK_MINUTES
 * (default 30) through one consumer and one producer, with the broker SIGKILLed
 * and restarted every FILERELAY_SOAK_RESTART_SECONDS (default: 6 restarts per
 * run, at least 20 s apart). The resident set size (VmRSS) and open file
 * handles (/proc/<pid>/fd) of both services are sampled; after a warm-up (the
 * first quarter) the least-squares slope of each must stay within
 * FILERELAY_SOAK_RSS_SLOPE (MiB/min, default 2; 20 for runs under 10 minutes,
 * which heap warm-up dominates) and FILERELAY_SOAK_FD_SLOPE
 * (handles/min, default 1). Every file must land exactly once with its bytes.
 * Output is verified and removed as it arrives, so disk use stays flat too.
 */
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rename, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { startNats, startService, waitFor, type RunningService } from "./support/index.js";
import { readDeadLetters } from "./producer-support.js";
import { sha256hex } from "./support/pipeline.js";

const env = process.env;
const minutes = Number(env.FILERELAY_SOAK_MINUTES ?? 30);
const rate = Number(env.FILERELAY_SOAK_RATE ?? 50);
const durationMs = minutes * 60_000;
const restartEveryMs = Number(env.FILERELAY_SOAK_RESTART_SECONDS ?? Math.max(20, (minutes * 60) / 6)) * 1000;
// Runs shorter than 10 minutes are dominated by heap warm-up: they check the harness, loosely.
const rssSlopeBound = Number(env.FILERELAY_SOAK_RSS_SLOPE ?? (minutes >= 10 ? 2 : 20));
const fdSlopeBound = Number(env.FILERELAY_SOAK_FD_SLOPE ?? 1);
const sampleEveryMs = Math.max(2000, Math.min(15_000, durationMs / 120));

interface Sample {
  tMin: number;
  rssMiB: number;
  fds: number;
}

async function sample(pid: number, t0: number): Promise<Sample | undefined> {
  try {
    const status = await readFile(`/proc/${pid}/status`, "utf8");
    const kb = Number(/VmRSS:\s+(\d+)\s+kB/.exec(status)?.[1] ?? NaN);
    const fds = (await readdir(`/proc/${pid}/fd`)).length;
    return { tMin: (Date.now() - t0) / 60_000, rssMiB: kb / 1024, fds };
  } catch {
    return undefined;
  }
}

/** Least-squares slope of y over x. */
export function slope(points: { x: number; y: number }[]): number {
  const n = points.length;
  if (n < 2) return 0;
  const mx = points.reduce((s, p) => s + p.x, 0) / n;
  const my = points.reduce((s, p) => s + p.y, 0) / n;
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += (p.x - mx) * (p.y - my);
    den += (p.x - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

describe.skipIf(env.FILERELAY_SOAK !== "1")("soak: steady load with broker restarts", () => {
  it(
    `${rate} files/s for ${minutes} min: nothing lost, RSS and file handles flat`,
    async () => {
      const root = await mkdtemp(join(tmpdir(), "soak-"));
      const input = join(root, "in");
      const output = join(root, "out");
      await mkdir(input);
      await mkdir(output);
      await using nats = await startNats();
      const consumer: RunningService = startService("consumer", {
        NATS_URL: nats.url,
        INPUT_DIR: input,
        SOURCE: "soak",
        LOG_LEVEL: "warn",
        POLL_INTERVAL_MS: "1000",
        STABILITY_MS: "300",
        DELETE_AFTER_PROCESSING: "true",
        RETRY_BACKOFF_MS: "200",
      });
      const producer: RunningService = startService("producer", {
        NATS_URL: nats.url,
        LOG_LEVEL: "warn",
        OUTPUT_DIR: output,
        ORGANIZE_BY: "none",
        FILENAME_TEMPLATE: "{{.Name}}{{.Ext}}",
        CONCURRENCY: "8",
      });
      await using _c = consumer;
      await using _p = producer;
      // warn level hides the start lines: wait for what they provision instead.
      await waitFor(
        async () => {
          const nc = await connect({ servers: nats.url });
          try {
            const jsm = await jetstreamManager(nc);
            await jsm.consumers.info("FILES", "file-producers");
            return true;
          } finally {
            await nc.close();
          }
        },
        { timeoutMs: 30_000, message: "the pipeline to be provisioned" },
      );

      const expected = new Map<string, string>();
      const seen = new Set<string>();
      let corrupted = 0;
      let duplicates = 0;
      let redelivered = 0;
      let written = 0;
      let restarts = 0;
      const samples: Record<"consumer" | "producer", Sample[]> = { consumer: [], producer: [] };
      const t0 = Date.now();
      const deadline = t0 + durationMs;

      // Verify and remove what has landed (keeps the output from growing over 30 minutes).
      const harvest = async () => {
        for (const name of await readdir(output)) {
          if (name.startsWith(".")) continue; // a producer temp file, not ours yet
          const want = expected.get(name);
          const got = sha256hex(await readFile(join(output, name)));
          if (want === undefined)
            duplicates++; // a conflict-renamed second copy (name-1.bin)
          else if (want !== got) corrupted++;
          // Landing again after we removed it (an ack lost in a broker kill): in a real
          // deployment the target would still exist and the sink would skip it.
          else if (seen.has(name)) redelivered++;
          seen.add(name);
          await unlink(join(output, name));
        }
      };

      const writer = (async () => {
        let i = 0;
        while (Date.now() < deadline) {
          // Pace: the number of files due by now, written as a batch (a schedule, not a synchronization).
          const due = Math.floor(((Date.now() - t0) / 1000) * rate);
          for (; i < due; i++) {
            const size = i % 100 === 99 ? 300 * 1024 : 512 + (i % 16) * 512;
            const data = randomBytes(size);
            const name = `s${String(i).padStart(7, "0")}.bin`;
            expected.set(name, sha256hex(data));
            await writeFile(join(input, `.${name}.tmp`), data);
            await rename(join(input, `.${name}.tmp`), join(input, name));
            written++;
          }
          await sleep(100);
        }
      })();
      const sampler = (async () => {
        while (Date.now() < deadline) {
          for (const svc of [consumer, producer]) {
            const s = await sample(svc.pid, t0);
            if (s) samples[svc.name].push(s);
          }
          await harvest();
          await sleep(sampleEveryMs);
        }
      })();
      const chaos = (async () => {
        for (let next = t0 + restartEveryMs; next < deadline - 10_000; next += restartEveryMs) {
          await sleep(Math.max(0, next - Date.now()));
          await nats.restart();
          restarts++;
        }
      })();
      await Promise.all([writer, sampler, chaos]);

      // Drain: every file written must land.
      await waitFor(
        async () => {
          await harvest();
          return seen.size >= written;
        },
        { timeoutMs: 300_000, intervalMs: 1000, message: `all ${written} files to land` },
      );
      expect(consumer.proc.exitCode, "consumer still running").toBeNull();
      expect(producer.proc.exitCode, "producer still running").toBeNull();
      const lost = [...expected.keys()].filter((k) => !seen.has(k)).length;
      await using admin = await connect({ servers: nats.url });
      const dead = await readDeadLetters(admin, "file-producers").catch(() => []);
      const inputLeft = (await readdir(input)).length;

      const fit = (s: Sample[], key: "rssMiB" | "fds") => {
        const warm = s.filter((p) => p.tMin >= minutes / 4);
        return slope(warm.map((p) => ({ x: p.tMin, y: p[key] })));
      };
      const report = (["consumer", "producer"] as const).map((name) => {
        const s = samples[name];
        return {
          name,
          samples: s.length,
          rssFirst: s[0]?.rssMiB ?? 0,
          rssLast: s.at(-1)?.rssMiB ?? 0,
          rssMax: Math.max(...s.map((p) => p.rssMiB)),
          rssSlope: fit(s, "rssMiB"),
          fdsFirst: s[0]?.fds ?? 0,
          fdsLast: s.at(-1)?.fds ?? 0,
          fdsMax: Math.max(...s.map((p) => p.fds)),
          fdSlope: fit(s, "fds"),
        };
      });
      const f = (n: number) => n.toFixed(2);
      console.log(
        `soak: minutes=${minutes} rate=${rate}/s files=${written} restarts=${restarts} lost=${lost} corrupted=${corrupted} duplicates=${duplicates} redelivered-after-removal=${redelivered} dead-letters=${dead.length} input-left=${inputLeft}\n` +
          report
            .map(
              (r) =>
                `soak: ${r.name} samples=${r.samples} rss MiB first=${f(r.rssFirst)} last=${f(r.rssLast)} max=${f(r.rssMax)} slope=${f(r.rssSlope)} MiB/min (bound ${rssSlopeBound}); fds first=${r.fdsFirst} last=${r.fdsLast} max=${r.fdsMax} slope=${f(r.fdSlope)}/min (bound ${fdSlopeBound})`,
            )
            .join("\n"),
      );
      expect({ lost, corrupted, duplicates, dead: dead.length, inputLeft }).toEqual({
        lost: 0,
        corrupted: 0,
        duplicates: 0,
        dead: 0,
        inputLeft: 0,
      });
      expect(restarts).toBeGreaterThan(0);
      for (const r of report) {
        expect(r.rssSlope, `${r.name} RSS slope MiB/min`).toBeLessThan(rssSlopeBound);
        expect(r.fdSlope, `${r.name} fd slope /min`).toBeLessThan(fdSlopeBound);
      }
      await rm(root, { recursive: true, force: true });
    },
    (minutes + 10) * 60_000,
  );
});

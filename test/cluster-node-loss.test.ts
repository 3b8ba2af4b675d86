import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import {
  randInt,
  readOutputTree,
  seededRandom,
  startNatsCluster,
  startService,
  dumpServiceLogs,
  waitFor,
  walkFiles,
  writeSeededFile,
  type RunningService,
} from "./support/index.js";

/*
 * Cluster node loss (issue 9, item 2): a 3-node JetStream cluster, services
 * given all three URLs and STREAM_REPLICAS=3 (R3 stream, DLQ, KV and object
 * buckets). While files flow, the FILES stream leader is SIGKILLed; once the
 * rest of the run has gone on without it, it is restarted on the same store
 * and must rejoin (healthy, every R3 replica current again). Outputs are
 * counted by SHA-256 (each file's bytes are unique): zero lost, zero duplicates.
 */

const SEED = 4_242;
const FILES = 300;
const WRITE_MS = 24_000;
const KiB = 1024;
const external = !!process.env.FILERELAY_TEST_NATS_URL || process.env.FILERELAY_TEST_DOCKER === "1";

async function replicaState(jsm: JetStreamManager, stream: string) {
  const si = await jsm.streams.info(stream);
  return {
    leader: si.cluster?.leader,
    replicas: si.cluster?.replicas ?? [],
    messages: si.state.messages,
    numReplicas: si.config.num_replicas,
  };
}

describe("cluster: the FILES stream leader is lost mid-run", () => {
  it.skipIf(external)(
    `relays ${FILES} files through a leader SIGKILL and rejoin with no loss and no duplicate`,
    async () => {
      const t0 = Date.now();
      const root = await mkdtemp(join(tmpdir(), "cluster-"));
      const input = join(root, "input");
      const archive = join(root, "archive");
      const output = join(root, "output");
      const errors = join(root, "errors");
      await mkdir(input, { recursive: true });
      await using cluster = await startNatsCluster(3);
      const clusterReadyMs = Date.now() - t0;
      const services: RunningService[] = [];
      const common = { NATS_URL: cluster.url, STREAM_REPLICAS: "3", LOG_LEVEL: "info", SHUTDOWN_TIMEOUT_MS: "10000" };
      const nc = await connect({ servers: cluster.servers.map((s) => s.url), maxReconnectAttempts: -1 });
      try {
        const consumer = startService("consumer", {
          ...common,
          INPUT_DIR: input,
          ARCHIVE_DIR: archive,
          ERROR_DIR: join(errors, "consumer"),
          SOURCE: "cluster",
          STABILITY_MS: "500",
          POLL_INTERVAL_MS: "1000",
          RETRY_BACKOFF_MS: "250",
        });
        services.push(consumer);
        await consumer.waitForLog((l) => l.msg === "consumer started", 60_000, "consumer ready");
        const producerEnv = {
          ...common,
          OUTPUT_DIR: output,
          ERROR_DIR: join(errors, "producer"),
          ORGANIZE_BY: "none",
          ACK_WAIT_MS: "5000",
          RETRY_BACKOFF_MS: "250",
        };
        for (let i = 0; i < 2; i++) {
          const p = startService("producer", producerEnv);
          services.push(p);
          await p.waitForLog((l) => l.msg === "consuming files", 60_000, "producer ready");
        }
        const jsm = await jetstreamManager(nc);
        for (const stream of ["FILES", "FILES_DLQ", "OBJ_FILES_payloads", "KV_FILES_fingerprints", "KV_FILES_claims"]) {
          expect((await replicaState(jsm, stream)).numReplicas, stream).toBe(3);
        }

        // 300 files, 10 % of them 300 KiB – 3 MiB (over INLINE_MAX_BYTES: via the R3 object store).
        const rng = seededRandom(SEED);
        const expected = new Map<string, string>();
        const begin = Date.now();
        const writer = (async () => {
          for (let i = 0; i < FILES; i++) {
            const wait = begin + Math.floor((i * WRITE_MS) / FILES) - Date.now();
            if (wait > 0) await sleep(wait);
            const big = rng() < 0.1;
            const size = big ? randInt(rng, 300 * KiB, 3 * 1024 * KiB) : randInt(rng, 1, 64 * KiB);
            const rel = `b${i % 7}/f${String(i).padStart(4, "0")}.${big ? "bin" : "csv"}`;
            const sha = await writeSeededFile(join(input, rel), `${SEED}:${rel}`, size, {
              via: join(input, `.f${i}.partial`),
            });
            expected.set(sha, rel);
          }
        })();

        // Mid-run: SIGKILL the FILES leader, keep going on two nodes, then bring it back.
        await sleep(WRITE_MS / 3);
        const before = await replicaState(jsm, "FILES");
        const victimIndex = cluster.servers.findIndex((_, i) => `n${i + 1}` === before.leader);
        expect(victimIndex, `leader ${before.leader}`).toBeGreaterThanOrEqual(0);
        const victim = cluster.servers[victimIndex]!;
        const killedAt = Date.now();
        await victim.kill("SIGKILL");
        const newLeader = await waitFor(
          async () => {
            const s = await replicaState(jsm, "FILES");
            return s.leader && s.leader !== before.leader ? s.leader : undefined;
          },
          { timeoutMs: 30_000, message: "a new FILES leader" },
        );
        const electedMs = Date.now() - killedAt;
        await sleep(WRITE_MS / 3);
        const restartAt = Date.now();
        await victim.restart(); // resolves once the node has rejoined and reports healthy
        const rejoinedMs = Date.now() - restartAt;
        await waitFor(
          async () => {
            const s = await replicaState(jsm, "FILES");
            return s.replicas.length === 2 && s.replicas.every((r) => r.current && !r.offline);
          },
          { timeoutMs: 60_000, message: "every FILES replica current again" },
        );
        await writer;

        let status = "";
        const drained = await waitFor(
          async () => {
            const [left, archived, out, si, ci] = await Promise.all([
              walkFiles(input),
              walkFiles(archive),
              walkFiles(output),
              jsm.streams.info("FILES"),
              jsm.consumers.info("FILES", "file-producers"),
            ]);
            const settled = archived.length + (await walkFiles(join(errors, "consumer"))).length / 2;
            status = `input=${left.length} archived=${archived.length} output=${out.length} stream=${si.state.messages} unacked=${ci.num_ack_pending}`;
            return (
              left.length === 0 &&
              settled >= FILES &&
              out.length >= archived.length &&
              ci.num_pending === 0 &&
              ci.num_ack_pending === 0 &&
              ci.ack_floor.stream_seq === si.state.last_seq
            );
          },
          { timeoutMs: 90_000, intervalMs: 500, message: "the pipeline to drain" },
        ).then(
          () => true,
          () => false,
        );
        const exits = await Promise.all(services.map((s) => s.stop()));

        const { outputs, partial } = await readOutputTree(output);
        const copies = new Map<string, number>();
        let unknown = 0;
        for (const o of outputs) {
          if (expected.has(o.sha256)) copies.set(o.sha256, (copies.get(o.sha256) ?? 0) + 1);
          else unknown++;
        }
        const lost = [...expected.keys()].filter((sha) => !copies.has(sha)).length;
        const duplicates = [...copies.values()].reduce((n, c) => n + c - 1, 0);
        const dlq = (await jsm.streams.info("FILES_DLQ")).state.messages;
        const errorFiles = await walkFiles(errors);
        const archived = (await walkFiles(archive)).map((p) => p.slice(p.indexOf("/") + 1)).sort();
        const lostNames = [...expected.entries()].filter(([sha]) => !copies.has(sha)).map(([, rel]) => rel);
        if (!drained || lostNames.length > 0 || errorFiles.length > 0) {
          const logFile = join(tmpdir(), `cluster-node-loss-${Date.now()}.jsonl`);
          await dumpServiceLogs(services, logFile);
          for (const f of errorFiles.filter((e) => e.endsWith(".error.json")).slice(0, 3)) {
            console.log(`cluster: ${f}: ${await readFile(join(errors, f), "utf8")}`);
          }
          console.log(
            `cluster: not drained or lost (${status}); lost: ${lostNames.slice(0, 20).join(" ")}; errors: ${errorFiles.slice(0, 10).join(" ")}; logs in ${logFile}`,
          );
        }

        console.log(
          `cluster: killed leader ${before.leader} (node ${victimIndex + 1}) at ${Math.round((killedAt - begin) / 1000)} s; ` +
            `new leader ${newLeader} after ${electedMs} ms; rejoined in ${rejoinedMs} ms; cluster up in ${clusterReadyMs} ms; ` +
            `total ${Math.round((Date.now() - t0) / 1000)} s; dlq=${dlq} errors=${errorFiles.length} unknown=${unknown} partial=${partial.length}`,
        );
        console.log(`cluster: files=${expected.size} lost=${lost} duplicates=${duplicates}`);

        expect(drained, status).toBe(true);
        expect(expected.size).toBe(FILES);
        expect({ lost, duplicates, unknown, partial: partial.length }).toEqual({
          lost: 0,
          duplicates: 0,
          unknown: 0,
          partial: 0,
        });
        expect(outputs).toHaveLength(FILES);
        expect(archived).toEqual([...expected.values()].sort());
        expect(dlq).toBe(0);
        expect(errorFiles).toEqual([]);
        expect(exits).toEqual([0, 0, 0]);
      } finally {
        await nc.close();
        await Promise.all(services.map((s) => s.kill()));
        await rm(root, { recursive: true, force: true });
      }
    },
    180_000,
  );
});

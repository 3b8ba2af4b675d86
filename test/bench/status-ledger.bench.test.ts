import { randomUUID } from "node:crypto";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { connect } from "@nats-io/transport-node";
import { it } from "vitest";
import { openStatusLedger, type Envelope } from "@filerelay/core/internal";
import { runCli, startNats } from "../support/index.js";
import {
  cpuSecondsOf,
  loadNote,
  machineInfo,
  makeFiles,
  removeDir,
  syncDisk,
  tempDir,
  writeResult,
} from "./benchSupport.js";
import { Pipeline } from "./pipeline.js";

/** Files per run of the on/off comparison. */
const FILES = Number(process.env.BENCH_LEDGER_FILES ?? 5000);
/** Alternating on/off pairs (the host's speed drifts: pairs, not one run each). */
const PAIRS = Number(process.env.BENCH_LEDGER_PAIRS ?? 3);
/** Records in the ledger the query benchmark asks. */
const RECORDS = Number(process.env.BENCH_LEDGER_RECORDS ?? 100_000);

/** CPU µs per file of consumer + producer + nats-server for one relay of FILES × 4 KiB. */
async function relayCpuPerFile(status: boolean): Promise<number> {
  const env = { STATUS: String(status) };
  await using pipe = await Pipeline.start({ consumerEnv: { STABILITY_MS: "200", ...env }, producerEnv: env });
  await pipe.warmUp();
  const tree = join(pipe.staging, "tree");
  await makeFiles(tree, FILES, () => 4096, 100);
  await syncDisk();
  const pids = [pipe.consumer.pid, ...pipe.producers.map((s) => s.pid), pipe.nats.pid() ?? -1];
  const cpuOf = () => Promise.all(pids.map((pid) => cpuSecondsOf(pid)));
  const before = await cpuOf();
  await pipe.relayTree(tree, FILES);
  const after = await cpuOf();
  await pipe.stop();
  const seconds = after.reduce((sum, v, i) => sum + v - before[i]!, 0);
  return Math.round((seconds / FILES) * 1e6);
}

it(`status ledger: CPU per file on vs off (${PAIRS} pairs × ${FILES} files), and list --state failed over ${RECORDS} records`, async () => {
  const on: number[] = [];
  const off: number[] = [];
  const notes: string[] = [];
  for (let i = 0; i < PAIRS; i++) {
    // Alternate which goes first, so a drifting host favours neither.
    const order = i % 2 === 0 ? [true, false] : [false, true];
    for (const status of order) {
      const us = await relayCpuPerFile(status);
      (status ? on : off).push(us);
      notes.push(`pair ${i + 1} STATUS=${status}: ${us} µs/file (${loadNote()})`);
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

  // A ledger of RECORDS files (1 % failed), written as the services would.
  await using nats = await startNats();
  const nc = await connect({ servers: nats.url });
  const scratch = await tempDir("ledger-query");
  let query: Record<string, number>;
  try {
    const ledger = await openStatusLedger(nc, { by: "bench", sinkGroups: ["file-producers"] });
    const t0 = performance.now();
    const failedIds: string[] = [];
    const window = 512;
    for (let start = 0; start < RECORDS; start += window) {
      await Promise.all(
        Array.from({ length: Math.min(window, RECORDS - start) }, async (_, k) => {
          const n = start + k;
          const envelope: Envelope = {
            id: randomUUID(),
            source: "bench",
            type: "io.filerelay.file.v1",
            time: new Date(),
            subject: `dir-${n % 100}/file-${n}.csv`,
            contentType: "text/csv",
            filename: `file-${n}.csv`,
            size: 4096,
            sha256: "0".repeat(64),
            mtime: new Date(),
            payload: { kind: "inline" },
          };
          await ledger.recordSource(envelope, "published");
          const failed = n % 100 === 42;
          if (failed) failedIds.push(envelope.id);
          await ledger.recordDelivery(envelope, "file-producers", failed ? "failed" : "delivered", {
            attempts: failed ? 5 : 1,
            ...(failed ? { code: "WRITE_FAILED", reason: "EACCES" } : { location: `file:///out/file-${n}.csv` }),
          });
        }),
      );
    }
    const fillMs = performance.now() - t0;
    const t1 = performance.now();
    const failed = await ledger.list({ state: "failed", limit: 50 });
    const listMs = performance.now() - t1;
    if (failed.length !== Math.min(50, failedIds.length)) throw new Error(`list found ${failed.length} failed records`);
    const t2 = performance.now();
    const one = await ledger.get(failedIds[0]!);
    const getMs = performance.now() - t2;
    if (one?.state !== "failed") throw new Error("get did not find a failed record");
    await ledger.close();
    const cwd = join(scratch, "cwd");
    await mkdir(cwd, { recursive: true });
    const t3 = performance.now();
    const run = await runCli(["files", "list", "--state", "failed", "--json"], { NATS_URL: nats.url }, cwd);
    const cliMs = performance.now() - t3;
    if (run.code !== 0) throw new Error(`files list failed: ${run.stderr}`);
    query = {
      records: RECORDS,
      failedRecords: failedIds.length,
      fillSeconds: Number((fillMs / 1000).toFixed(1)),
      listFailedMs: Math.round(listMs),
      getOneMs: Math.round(getMs),
      cliListFailedMs: Math.round(cliMs),
    };
  } finally {
    await nc.close();
    await removeDir(scratch);
  }

  const onUs = median(on);
  const offUs = median(off);
  await writeResult({
    name: "status-ledger",
    takenAt: new Date().toISOString(),
    machine: await machineInfo(),
    metrics: {
      files: FILES,
      pairs: PAIRS,
      cpuUsPerFileStatusOn: onUs,
      cpuUsPerFileStatusOff: offUs,
      ledgerCostRatio: Number((onUs / offUs).toFixed(3)),
      ...query,
    },
    notes: [
      "CPU per file = consumer + producer + nats-server CPU over a relay of 4 KiB files (archive, fsync), medians of alternating runs",
      `on: ${on.join(", ")} µs/file; off: ${off.join(", ")} µs/file`,
      "list: ledger.list({state: failed, limit: 50}) in-process; cli: the whole `filerelay files list --state failed --json` process (Node start-up included)",
      ...notes,
    ],
  });
});

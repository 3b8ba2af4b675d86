import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { once } from "node:events";
import { performance } from "node:perf_hooks";
import { pipeline } from "node:stream/promises";
import { DuckDBInstance } from "@duckdb/node-api";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { it } from "vitest";
import { publishFile } from "@filerelay/core";
import { silentLogger } from "@filerelay/core/internal";
import { convertStep, copySql, readerSql } from "../../packages/transformer/src/convert.js";
import type { Item, Job } from "../../packages/transformer/src/item.js";
import { unpackStep } from "../../packages/transformer/src/unpack.js";
import { seededRandom, startNats } from "../support/index.js";
import { handled, startTransformer, transformerReady } from "../transformer-support.js";
import {
  countFiles,
  loadNote,
  machineInfo,
  removeDir,
  syncDisk,
  tempDir,
  timeCommand,
  writeResult,
} from "./benchSupport.js";

/** Bytes of archive entries (BENCH_UNPACK_BYTES=1073741824 for the 1 GiB case). */
const UNPACK_BYTES = Number(process.env.BENCH_UNPACK_BYTES ?? 256 * 1024 ** 2);
/** Bytes of the generated CSV. */
const CSV_BYTES = Number(process.env.BENCH_CSV_BYTES ?? 200_000_000);
/** The transformer's defaults: what the step-level and "same settings" DuckDB runs use. */
const MEMORY_LIMIT = "256MB";
const THREADS = 2;

const MB = 1e6;
const mbps = (bytes: number, ms: number) => Number((bytes / MB / (ms / 1000)).toFixed(1));

/**
 * A tree of files of 4 KiB–4 MiB (log-uniform, so most are small and most
 * bytes are in large ones), seeded; contents are a 3:1 mix of incompressible
 * bytes and text-like lines, so gzip has work on both sides.
 */
async function makeTree(dir: string, total: number): Promise<{ files: number; bytes: number }> {
  const rng = seededRandom(20261202);
  const noise = Buffer.alloc(8 * 1024 * 1024);
  for (let i = 0; i < noise.length; i += 4) noise.writeUInt32LE(Math.floor(rng() * 2 ** 32), i);
  const text = Buffer.from(
    Array.from({ length: 120_000 }, (_, i) => `${i},${(rng() * 1e6).toFixed(2)},item-${i % 977},ok\n`).join(""),
  );
  let bytes = 0;
  let files = 0;
  while (bytes < total) {
    const size = Math.min(total - bytes, Math.round(4096 * Math.pow(1024, rng())));
    const pool = files % 4 === 3 ? text : noise;
    const off = Math.floor(rng() * Math.max(1, pool.length - size));
    const content = pool.length >= size ? pool.subarray(off, off + size) : Buffer.alloc(size, pool);
    const path = join(dir, `d${files % 16}`, `e${files % 7}`, `f${String(files).padStart(6, "0")}.bin`);
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, content);
    bytes += size;
    files++;
  }
  return { files, bytes };
}

/** A CSV of about `total` bytes: integer, timestamp, text, double and boolean columns. */
async function makeCsv(path: string, total: number): Promise<number> {
  const rng = seededRandom(7);
  const out = createWriteStream(path);
  out.write("id,ts,category,amount,label,flag\n");
  let written = 0;
  let rows = 0;
  const t0 = Date.UTC(2026, 0, 1);
  while (written < total) {
    let chunk = "";
    for (let i = 0; i < 5000; i++, rows++) {
      const ts = new Date(t0 + rows * 1000).toISOString().replace("T", " ").slice(0, 19);
      chunk += `${rows},${ts},cat-${rows % 37},${(rng() * 10000).toFixed(3)},label ${Math.floor(rng() * 1e9).toString(36)},${rng() < 0.5}\n`;
    }
    written += Buffer.byteLength(chunk);
    if (!out.write(chunk)) await once(out, "drain");
  }
  out.end();
  await once(out, "finish");
  return rows;
}

function job(scratch: string): Job {
  let n = 0;
  return {
    source: "bench",
    scratchPath: (name) => join(scratch, `${n++}-${name}`),
    working: () => undefined,
    log: silentLogger(),
    signal: new AbortController().signal,
  };
}

function rootItem(path: string, size: number, subject: string): Item {
  return {
    id: "00000000-0000-4000-8000-000000000001",
    basisId: "00000000-0000-4000-8000-000000000001",
    parentId: "00000000-0000-4000-8000-000000000001",
    subject,
    filename: subject.slice(subject.lastIndexOf("/") + 1),
    mtime: new Date(),
    size,
    depth: 0,
    file: path,
    open: () => createReadStream(path),
  };
}

async function duckCopy(csv: string, out: string, settings: Record<string, string>): Promise<number> {
  const instance = await DuckDBInstance.create(":memory:", settings);
  const connection = await instance.connect();
  try {
    const t0 = performance.now();
    await connection.run(copySql(readerSql("data.csv", csv), out, "zstd"));
    return performance.now() - t0;
  } finally {
    connection.closeSync();
    instance.closeSync();
  }
}

async function parquetRows(path: string): Promise<number> {
  const instance = await DuckDBInstance.create(":memory:");
  const connection = await instance.connect();
  try {
    const reader = await connection.runAndReadAll(`SELECT count(*) FROM read_parquet('${path}')`);
    return Number(reader.getRows()[0]![0]);
  } finally {
    connection.closeSync();
    instance.closeSync();
  }
}

it(`transformer: unpack of a ${Math.round(UNPACK_BYTES / 1024 ** 2)} MiB tar.gz vs tar -xzf; CSV → Parquet of ${Math.round(CSV_BYTES / MB)} MB vs DuckDB COPY`, async () => {
  const metrics: Record<string, number | string | null> = {};
  const notes: string[] = [];
  const dir = await tempDir("transformer");
  try {
    // ---- unpack --------------------------------------------------------------
    const tree = join(dir, "tree");
    const { files, bytes } = await makeTree(tree, UNPACK_BYTES);
    const tgz = join(dir, "bundle.tar.gz");
    await timeCommand("tar", ["-czf", tgz, "-C", tree, "."]);
    await removeDir(tree);
    const archiveBytes = (await stat(tgz)).size;
    Object.assign(metrics, {
      entries: files,
      entryMB: Math.round(bytes / MB),
      archiveMB: Math.round(archiveBytes / MB),
    });
    await syncDisk();

    const tarOnce = async (label: string) => {
      const out = join(dir, `tar-${label}`);
      await mkdir(out);
      const ms = await timeCommand("tar", ["-xzf", tgz, "-C", out]);
      if ((await countFiles(out)) !== files) throw new Error("tar -xzf extracted a different number of files");
      await removeDir(out);
      await syncDisk();
      return ms;
    };
    const tarBefore = await tarOnce("before");

    // The unpack step in this process: its check pass and its unpack pass, entries written to disk like tar's.
    const stepOut = join(dir, "step-out");
    const scratch = join(dir, "scratch");
    await mkdir(scratch);
    let stepEntries = 0;
    const step = unpackStep({
      limits: { maxBytes: 64 * 1024 ** 3, maxFiles: 10_000_000, maxRatio: 200 },
      maxDepth: 3,
      keepOriginal: false,
    });
    const t0 = performance.now();
    await step.run(
      rootItem(tgz, archiveBytes, "bundle.tar.gz"),
      async (item) => {
        const path = join(stepOut, item.subject);
        await mkdir(dirname(path), { recursive: true });
        await pipeline(item.open(), createWriteStream(path));
        stepEntries++;
      },
      job(scratch),
    );
    const stepMs = performance.now() - t0;
    if (stepEntries !== files) throw new Error(`the unpack step emitted ${stepEntries} of ${files} entries`);
    await removeDir(stepOut);
    await syncDisk();
    const tarAfter = await tarOnce("after");

    // The transformer service: the archive published into NATS, every entry published back, parent acked.
    await using nats = await startNats();
    const nc = await connect({ servers: nats.url });
    let serviceMs: number;
    try {
      await using transformer = startTransformer({
        NATS_URL: nats.url,
        TRANSFORMS: "unpack",
        KEEP_ORIGINAL: "false",
        SINK_GROUPS: "bench-sink",
        TRANSFORM_TMP_DIR: join(dir, "service-scratch"),
        ACK_WAIT_MS: "120000",
        LOG_LEVEL: "info",
      });
      await transformerReady(transformer, 60_000);
      await syncDisk();
      await publishFile(nc, createReadStream(tgz), { source: "bench", subject: "bundle.tar.gz" });
      const line = await transformer.waitForLog(
        (l) => l.msg === "file handled" || l.msg === "file dead-lettered",
        60 * 60_000,
        "the transformer to handle the archive",
      );
      if (handled(transformer, "acked").length !== 1)
        throw new Error(`the archive was not acked: ${JSON.stringify(line)}`);
      serviceMs = Number(line.durationMs);
      const jsm = await jetstreamManager(nc);
      const info = await jsm.streams.info("FILES", { subjects_filter: "files.processed" });
      const published = info.state.subjects?.["files.processed"] ?? 0;
      if (published !== files) throw new Error(`the transformer published ${published} of ${files} entries`);
    } finally {
      await nc.close();
    }

    Object.assign(metrics, {
      tarXzfMBps: mbps(bytes, (tarBefore + tarAfter) / 2),
      tarXzfBeforeSeconds: Number((tarBefore / 1000).toFixed(1)),
      tarXzfAfterSeconds: Number((tarAfter / 1000).toFixed(1)),
      unpackStepMBps: mbps(bytes, stepMs),
      unpackStepSeconds: Number((stepMs / 1000).toFixed(1)),
      unpackServiceMBps: mbps(bytes, serviceMs),
      unpackServiceSeconds: Number((serviceMs / 1000).toFixed(1)),
    });
    notes.push(`unpack: ${loadNote()}`);
    notes.push(
      "unpack step = the transformer's unpack step in the bench process (check pass + unpack pass), entries written to files; " +
        "service = the transformer process from the archive's delivery to its ack (Object Store read, spool, both passes, every entry published and PubAcked)",
    );
    await removeDir(join(dir, "scratch"));
    await removeDir(tgz);

    // ---- convert -------------------------------------------------------------
    const csv = join(dir, "data.csv");
    const rows = await makeCsv(csv, CSV_BYTES);
    const csvBytes = (await stat(csv)).size;
    Object.assign(metrics, { csvMB: Math.round(csvBytes / MB), csvRows: rows });
    await syncDisk();
    const tmp = join(dir, "duck-tmp");
    await mkdir(tmp);
    const sameSettings = {
      memory_limit: MEMORY_LIMIT,
      threads: String(THREADS),
      temp_directory: tmp,
      preserve_insertion_order: "false",
    };

    const directSame = await duckCopy(csv, join(dir, "direct-same.parquet"), sameSettings);
    const parquetRowsOut = await parquetRows(join(dir, "direct-same.parquet"));
    if (parquetRowsOut !== rows) throw new Error(`DuckDB wrote ${parquetRowsOut} of ${rows} rows`);
    const parquetBytes = (await stat(join(dir, "direct-same.parquet"))).size;
    await removeDir(join(dir, "direct-same.parquet"));

    const convert = convertStep({
      patterns: ["*.csv"],
      compression: "zstd",
      memoryLimit: MEMORY_LIMIT,
      threads: THREADS,
      tmpDir: tmp,
      keepOriginal: false,
    });
    const convertScratch = join(dir, "convert-scratch");
    await mkdir(convertScratch);
    let derived: Item | undefined;
    const t1 = performance.now();
    await convert.run(
      rootItem(csv, csvBytes, "data.csv"),
      (item) => {
        derived = item;
        return Promise.resolve();
      },
      job(convertScratch),
    );
    const stepConvertMs = performance.now() - t1;
    if (!derived?.filename.endsWith(".parquet")) throw new Error("the convert step emitted no Parquet file");

    const directDefault = await duckCopy(csv, join(dir, "direct-default.parquet"), { temp_directory: tmp });
    await removeDir(join(dir, "direct-default.parquet"));

    Object.assign(metrics, {
      parquetMB: Number((parquetBytes / MB).toFixed(1)),
      convertStepMBps: mbps(csvBytes, stepConvertMs),
      convertStepSeconds: Number((stepConvertMs / 1000).toFixed(1)),
      duckdbCopySameSettingsMBps: mbps(csvBytes, directSame),
      duckdbCopySameSettingsSeconds: Number((directSame / 1000).toFixed(1)),
      duckdbCopyDefaultsMBps: mbps(csvBytes, directDefault),
      duckdbCopyDefaultsSeconds: Number((directDefault / 1000).toFixed(1)),
    });
    notes.push(`convert: ${loadNote()}`);
    notes.push(
      `convert step and "same settings" COPY: memory_limit ${MEMORY_LIMIT}, threads ${THREADS} (the transformer's defaults), ZSTD; ` +
        `"defaults" COPY: DuckDB's own memory limit and thread count`,
    );

    await writeResult({
      name: "transformer",
      takenAt: new Date().toISOString(),
      machine: await machineInfo(),
      metrics,
      notes,
    });
  } finally {
    await removeDir(dir);
  }
});

import { createWriteStream } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DuckDBInstance } from "@duckdb/node-api";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { startNats, startService, waitFor } from "./support/index.js";
import { landed } from "./transformer-support.js";
import {
  chainConsumerEnv,
  handled,
  mirrorProducerEnv,
  transformerEnv,
  startTransformer,
  transformerReady,
} from "./transformer-support.js";

// consumer → transformer (convert) → producer: CSV / JSON Lines → Parquet read back with DuckDB.

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "transformer-convert-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

/** A CSV of about `bytes` bytes with a header and `rows` rows (returned). */
async function writeCsv(path: string, bytes: number): Promise<number> {
  const out = createWriteStream(path);
  out.write("id,name,amount,created_at,flag\n");
  let size = 0;
  let rows = 0;
  while (size < bytes) {
    const line = `${rows},name-${rows % 977},${(rows * 1.25).toFixed(2)},2024-01-${String((rows % 28) + 1).padStart(2, "0")} 10:00:00,${rows % 2 === 0}\n`;
    if (!out.write(line)) await new Promise<void>((r) => out.once("drain", () => r()));
    size += line.length;
    rows++;
  }
  await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
  return rows;
}

async function parquetFacts(path: string): Promise<{ rows: number; columns: string[]; codecs: string[] }> {
  const db = await DuckDBInstance.create(":memory:");
  const c = await db.connect();
  try {
    const lit = `'${path.replace(/'/g, "''")}'`;
    const rows = Number((await c.runAndReadAll(`SELECT count(*) FROM read_parquet(${lit})`)).getRows()[0]![0]);
    const columns = (await c.runAndReadAll(`SELECT name FROM parquet_schema(${lit}) WHERE num_children IS NULL`))
      .getRows()
      .map((r) => String(r[0]));
    const codecs = (await c.runAndReadAll(`SELECT DISTINCT compression FROM parquet_metadata(${lit})`))
      .getRows()
      .map((r) => String(r[0]));
    return { rows, columns, codecs };
  } finally {
    c.closeSync();
    db.closeSync();
  }
}

describe("transformer: convert end to end", () => {
  it("converts a ~20 MB CSV to ZSTD Parquet with the same rows and columns, keeping the CSV; bad JSON → CONVERT_FAILED", async () => {
    await using nats = await startNats();
    const staging = join(root, "staging");
    await mkdir(staging, { recursive: true });
    const rows = await writeCsv(join(staging, "sales.csv"), 20 * 1024 * 1024);
    await writeFile(join(staging, "events.jsonl"), '{"a":1,"b":"x"}\n{"a":2,"b":"y"}\n{"a":3,"b":null}\n');
    await writeFile(join(staging, "broken.json"), '[{"a": 1}, {"a": ');

    const out = join(root, "out");
    await mkdir(join(root, "input"), { recursive: true });
    await using transformer = startTransformer(transformerEnv(nats.url, root, { TRANSFORMS: "unpack,convert" }));
    await transformerReady(transformer);
    await using consumer = startService("consumer", chainConsumerEnv(nats.url, root));
    await using producer = startService("producer", mirrorProducerEnv(nats.url, out));
    for (const name of ["sales.csv", "events.jsonl", "broken.json"]) {
      await rm(join(root, "input", name), { force: true });
      await writeFile(
        join(root, "input", name),
        await import("node:fs/promises").then((fs) => fs.readFile(join(staging, name))),
      );
    }

    await waitFor(async () => (await landed(out)).length >= 4, { timeoutMs: 180_000, message: "4 files landed" });
    const names = (await landed(out)).map((f) => f.rel);
    expect(names).toEqual(["events.jsonl", "events.parquet", "sales.csv", "sales.parquet"]);
    const sales = await parquetFacts(join(out, "sales.parquet"));
    expect(sales.rows).toBe(rows);
    expect(sales.columns).toEqual(["id", "name", "amount", "created_at", "flag"]);
    expect(sales.codecs).toEqual(["ZSTD"]);
    const events = await parquetFacts(join(out, "events.parquet"));
    expect(events).toMatchObject({ rows: 3, columns: ["a", "b"] });

    const dead = await waitFor(() => handled(transformer, "dead-lettered")[0], {
      timeoutMs: 60_000,
      message: "broken.json dead-lettered",
    });
    expect(dead).toMatchObject({ path: "broken.json", code: "CONVERT_FAILED", attempts: 1 });
    expect(String(dead.err)).toMatch(/DuckDB cannot convert broken\.json/);

    expect(await transformer.stop()).toBe(0);
    expect(await producer.stop()).toBe(0);
    expect(await consumer.stop()).toBe(0);
  }, 300_000);

  it("writes SNAPPY with PARQUET_COMPRESSION=snappy, and only the Parquet file with KEEP_ORIGINAL=false", async () => {
    await using nats = await startNats();
    const out = join(root, "out");
    await mkdir(join(root, "input"), { recursive: true });
    await using transformer = startTransformer(
      transformerEnv(nats.url, root, { TRANSFORMS: "convert", PARQUET_COMPRESSION: "snappy", KEEP_ORIGINAL: "false" }),
    );
    await transformerReady(transformer);
    await using consumer = startService("consumer", chainConsumerEnv(nats.url, root));
    await using producer = startService("producer", mirrorProducerEnv(nats.url, out));
    const rows = await writeCsv(join(root, "staged.csv"), 2 * 1024 * 1024);
    await import("node:fs/promises").then((fs) =>
      fs.rename(join(root, "staged.csv"), join(root, "input", "q.tsv.csv")),
    );

    await waitFor(async () => (await landed(out)).length >= 1, { timeoutMs: 120_000, message: "the Parquet landed" });
    expect((await landed(out)).map((f) => f.rel)).toEqual(["q.tsv.parquet"]);
    const facts = await parquetFacts(join(out, "q.tsv.parquet"));
    expect(facts).toEqual({ rows, columns: ["id", "name", "amount", "created_at", "flag"], codecs: ["SNAPPY"] });
    expect(await transformer.stop()).toBe(0);
    expect(await producer.stop()).toBe(0);
    expect(await consumer.stop()).toBe(0);
  }, 200_000);
});

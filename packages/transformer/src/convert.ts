import { createReadStream, createWriteStream } from "node:fs";
import { rm, stat } from "node:fs/promises";
import { extname } from "node:path";
import { pipeline } from "node:stream/promises";
import { DuckDBInstance } from "@duckdb/node-api";
import { FilerelayError } from "@filerelay/core";
import type { ParquetCodec } from "./config.js";
import { DERIVATIONS, derivedId, parquetSubject } from "./derive.js";
import { globMatcher } from "./glob.js";
import type { Step } from "./item.js";

export const PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet";

export interface ConvertOptions {
  patterns: readonly string[];
  compression: ParquetCodec;
  /** DuckDB memory_limit, e.g. 256MB. */
  memoryLimit: string;
  threads: number;
  /** Where DuckDB spills past its memory limit. */
  tmpDir: string;
  keepOriginal: boolean;
}

/** SQL string literal. */
function lit(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

/** The DuckDB table function reading a data file, chosen by its extension (pure). */
export function readerSql(filename: string, path: string): string {
  switch (extname(filename).toLowerCase()) {
    case ".tsv":
    case ".tab":
      return `read_csv(${lit(path)}, delim = '\\t', header = true)`;
    case ".jsonl":
    case ".ndjson":
      return `read_json(${lit(path)}, format = 'newline_delimited')`;
    case ".json":
      return `read_json(${lit(path)}, format = 'auto')`;
    default:
      return `read_csv(${lit(path)})`;
  }
}

/** The COPY statement writing `reader`'s rows as Parquet (pure). */
export function copySql(reader: string, out: string, codec: ParquetCodec): string {
  const compression = codec === "none" ? "uncompressed" : codec;
  return `COPY (SELECT * FROM ${reader}) TO ${lit(out)} (FORMAT parquet, COMPRESSION ${compression})`;
}

/**
 * The convert step: CSV, TSV, JSON Lines and JSON arrays → Parquet through
 * DuckDB, schema inferred by DuckDB. The file is copied to scratch space
 * (DuckDB reads files), converted under a memory limit with spilling to the
 * temp dir, and the Parquet file is streamed from disk into the publish.
 */
export function convertStep(opts: ConvertOptions): Step {
  const matches = globMatcher(opts.patterns);
  return {
    name: "convert",
    applies: (item) => matches(item.filename),
    async run(item, emit, job) {
      let input = item.file;
      let copied: string | undefined;
      if (input === undefined) {
        // The extension stays: DuckDB picks its reader settings from it.
        copied = job.scratchPath(`input${extname(item.filename).toLowerCase()}`);
        await pipeline(item.open(), createWriteStream(copied));
        input = copied;
      }
      const out = job.scratchPath("output.parquet");
      try {
        job.working();
        const instance = await DuckDBInstance.create(":memory:", {
          memory_limit: opts.memoryLimit,
          threads: String(opts.threads),
          temp_directory: opts.tmpDir,
          autoinstall_known_extensions: "false",
          preserve_insertion_order: "false",
        });
        try {
          const connection = await instance.connect();
          try {
            const keepAlive = setInterval(() => job.working(), 1000);
            try {
              await connection.run(copySql(readerSql(item.filename, input), out, opts.compression));
            } finally {
              clearInterval(keepAlive);
            }
          } finally {
            connection.closeSync();
          }
        } finally {
          instance.closeSync();
        }
      } catch (err) {
        await rm(out, { force: true });
        if (copied) await rm(copied, { force: true });
        const message = err instanceof Error ? err.message : String(err);
        throw new FilerelayError("CONVERT_FAILED", `DuckDB cannot convert ${item.filename} to Parquet: ${message}`, {
          cause: err,
        });
      }
      try {
        const src = input;
        if (opts.keepOriginal) await emit({ ...item, file: src, open: () => createReadStream(src) });
        const id = derivedId(item.basisId, DERIVATIONS.parquet);
        const subject = parquetSubject(item.subject);
        await emit({
          id,
          basisId: id,
          parentId: item.basisId,
          subject,
          filename: subject.slice(subject.lastIndexOf("/") + 1),
          mtime: item.mtime,
          size: (await stat(out)).size,
          depth: item.depth,
          file: out,
          contentType: PARQUET_CONTENT_TYPE,
          open: () => createReadStream(out),
        });
      } finally {
        await rm(out, { force: true });
        if (copied) await rm(copied, { force: true });
      }
    },
  };
}

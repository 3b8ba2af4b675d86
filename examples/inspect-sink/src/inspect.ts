import type { FileContext } from "@filerelay/core";
import { headers as natsHeaders, type NatsConnection } from "@nats-io/transport-node";

export type Format = "csv" | "jsonl";

const CSV_TYPES = new Set(["text/csv", "application/csv"]);
const JSONL_TYPES = new Set([
  "application/jsonl",
  "application/x-ndjson",
  "application/ndjson",
  "application/x-jsonlines",
]);

/** CSV or JSONL by content type, else by extension (the consumer labels .jsonl application/octet-stream). */
export function formatOf(contentType: string, filename: string): Format | undefined {
  const type = (contentType.split(";")[0] ?? "").trim().toLowerCase();
  const ext = filename.includes(".") ? filename.slice(filename.lastIndexOf(".") + 1).toLowerCase() : "";
  if (CSV_TYPES.has(type) || ext === "csv") return "csv";
  if (JSONL_TYPES.has(type) || ext === "jsonl" || ext === "ndjson") return "jsonl";
  return undefined;
}

/** Lines of a byte stream ('\n'-separated, a trailing '\r' dropped): holds one line in memory, never the file. */
export async function* splitLines(chunks: AsyncIterable<Buffer>, onChunk?: () => void): AsyncGenerator<Buffer> {
  let carry: Buffer[] = [];
  for await (const chunk of chunks) {
    onChunk?.();
    let start = 0;
    for (let nl = chunk.indexOf(10); nl !== -1; nl = chunk.indexOf(10, start)) {
      carry.push(chunk.subarray(start, nl));
      yield stripCr(carry.length === 1 ? carry[0]! : Buffer.concat(carry));
      carry = [];
      start = nl + 1;
    }
    if (start < chunk.length) carry.push(chunk.subarray(start));
  }
  if (carry.length > 0) yield stripCr(Buffer.concat(carry));
}

const stripCr = (line: Buffer) => (line.at(-1) === 13 ? line.subarray(0, -1) : line);

/** Fields in a CSV header line (commas inside double quotes do not separate). */
export function csvColumns(header: string): number {
  let columns = 1;
  let quoted = false;
  for (const ch of header.replace(/^\uFEFF/, "")) {
    if (ch === '"') quoted = !quoted;
    else if (ch === "," && !quoted) columns++;
  }
  return header.length === 0 ? 0 : columns;
}

export interface Counts {
  format: Format;
  /** Physical lines (a final line without '\n' counts; a trailing '\n' adds none). */
  lines: number;
  /** CSV: fields in the header line. */
  columns?: number;
  /** JSONL: non-blank lines that are not valid JSON, and the first few of their line numbers (1-based). */
  invalidLines?: number;
  invalidLineNumbers?: number[];
}

export async function countLines(chunks: AsyncIterable<Buffer>, format: Format, onChunk?: () => void): Promise<Counts> {
  const counts: Counts =
    format === "csv" ? { format, lines: 0, columns: 0 } : { format, lines: 0, invalidLines: 0, invalidLineNumbers: [] };
  for await (const line of splitLines(chunks, onChunk)) {
    counts.lines++;
    if (format === "csv") {
      if (counts.lines === 1) counts.columns = csvColumns(line.toString("utf8"));
      continue;
    }
    const text = line.toString("utf8").trim();
    if (text === "") continue;
    try {
      JSON.parse(text);
    } catch {
      counts.invalidLines = (counts.invalidLines ?? 0) + 1;
      if (counts.invalidLineNumbers!.length < 10) counts.invalidLineNumbers!.push(counts.lines);
    }
  }
  return counts;
}

/** `files.summary.<source>`: the source as one subject token. */
export function summarySubject(prefix: string, source: string): string {
  return `${prefix}.${source.replace(/[^A-Za-z0-9_-]/g, "_")}`;
}

/**
 * Counts CSV/JSONL files as they stream by and publishes a JSON summary per
 * file (core NATS) before the file is acked; other files are acked untouched.
 */
export function createInspectHandler(nc: NatsConnection, prefix = "files.summary") {
  return async (ctx: FileContext): Promise<void> => {
    const e = ctx.envelope;
    const format = formatOf(e.contentType, e.filename);
    if (!format) return;
    const counts = await countLines(ctx.open(), format, () => ctx.working());
    const summary = { id: e.id, source: e.source, subject: e.subject, size: e.size, sha256: e.sha256, ...counts };
    const h = natsHeaders();
    h.set("content-type", "application/json");
    // Deduplicates a redelivered file's summary wherever a stream captures the subject.
    h.set("Nats-Msg-Id", `summary-${e.id}`);
    nc.publish(summarySubject(prefix, e.source), JSON.stringify(summary), { headers: h });
    await nc.flush();
    ctx.log.info({ summary: counts }, "file inspected");
  };
}

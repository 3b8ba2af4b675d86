import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { countLines, csvColumns, formatOf, splitLines, summarySubject } from "./inspect.js";

/** `text` as a stream of `size`-byte chunks. */
function chunked(text: string, size: number): Readable {
  const buf = Buffer.from(text);
  const parts: Buffer[] = [];
  for (let i = 0; i < buf.length; i += size) parts.push(buf.subarray(i, i + size));
  return Readable.from(parts);
}

const collect = async (text: string, size: number) => {
  const out: string[] = [];
  for await (const l of splitLines(chunked(text, size))) out.push(l.toString("utf8"));
  return out;
};

describe("inspect-sink counting", () => {
  it("splits lines the same way at any chunk size (CRLF, no final newline, multi-byte characters)", async () => {
    const text = "a,b\r\né,ü\n\nlast";
    for (const size of [1, 2, 3, 5, 64]) expect(await collect(text, size)).toEqual(["a,b", "é,ü", "", "last"]);
    expect(await collect("x\n", 1)).toEqual(["x"]);
    expect(await collect("", 4)).toEqual([]);
  });

  it("counts CSV header columns with quotes and a BOM", () => {
    expect(csvColumns('id,"name, full",amount')).toBe(3);
    expect(csvColumns("\uFEFFa,b")).toBe(2);
    expect(csvColumns("")).toBe(0);
  });

  it("counts JSONL lines and the invalid ones (blank lines are neither)", async () => {
    const text = '{"a":1}\n[1,2]\nnot json\n\n"str"\n{"broken":\n';
    expect(await countLines(chunked(text, 3), "jsonl")).toEqual({
      format: "jsonl",
      lines: 6,
      invalidLines: 2,
      invalidLineNumbers: [3, 6],
    });
    expect(await countLines(chunked("h1,h2\n1,2\n3,4", 2), "csv")).toEqual({ format: "csv", lines: 3, columns: 2 });
  });

  it("recognizes formats by content type or extension, and makes the source one subject token", () => {
    expect(formatOf("text/csv; charset=utf-8", "x")).toBe("csv");
    expect(formatOf("application/octet-stream", "events.JSONL")).toBe("jsonl");
    expect(formatOf("application/x-ndjson", "events")).toBe("jsonl");
    expect(formatOf("application/json", "data.json")).toBeUndefined();
    expect(summarySubject("files.summary", "crm.eu west*")).toBe("files.summary.crm_eu_west_");
  });
});

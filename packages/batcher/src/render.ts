import { stripXmlDeclaration, xmlBatchHead, xmlBatchTail, XmlToJson } from "./xml.js";
import type { BatchFormat } from "./config.js";

/**
 * A batch's file content, produced from its events as they are read back from
 * the spool (streamed: never the whole batch in memory). Output is coalesced
 * into chunks of about 256 KiB.
 */

export interface RenderOptions {
  format: BatchFormat;
  convert: "none" | "json";
  root: string;
  /** The batch failed its check: every event's bytes as received, one event per line. */
  raw: boolean;
}

const CHUNK_BYTES = 256 * 1024;
const NL = Buffer.from("\n");

/** `raw` and the raw fallback: each event as received, a newline added after one that lacks it. */
function rawPieces(event: Buffer): Buffer[] {
  return event[event.length - 1] === 0x0a ? [event] : [event, NL];
}

/** jsonl: one line per event; a value spread over several lines is re-serialized on one. */
export function jsonlLine(event: Buffer): Buffer[] {
  if (event.includes(0x0a) || event.includes(0x0d)) {
    return [Buffer.from(JSON.stringify(JSON.parse(event.toString("utf8")))), NL];
  }
  return [event, NL];
}

export async function* renderBatch(events: AsyncIterable<Buffer>, options: RenderOptions): AsyncGenerator<Buffer> {
  const parts: Buffer[] = [];
  let size = 0;
  const push = (b: Buffer) => {
    // Views of the spool's read buffer: copied once when the chunk is built.
    parts.push(b);
    size += b.length;
  };
  const take = () => {
    const out = Buffer.concat(parts, size);
    parts.length = 0;
    size = 0;
    return out;
  };

  if (options.raw || options.format === "raw") {
    for await (const e of events) {
      for (const p of rawPieces(e)) push(p);
      if (size >= CHUNK_BYTES) yield take();
    }
  } else if (options.format === "jsonl") {
    for await (const e of events) {
      for (const p of jsonlLine(e)) push(p);
      if (size >= CHUNK_BYTES) yield take();
    }
  } else if (options.convert === "json") {
    yield* renderJson(events, options.root);
    return;
  } else {
    push(xmlBatchHead(options.root));
    for await (const e of events) {
      push(stripXmlDeclaration(e).body);
      push(NL);
      if (size >= CHUNK_BYTES) yield take();
    }
    push(xmlBatchTail(options.root));
  }
  if (size > 0) yield take();
}

/** BATCH_CONVERT=json: the wrapped XML document as a JSON array, one object per element under the root. */
async function* renderJson(events: AsyncIterable<Buffer>, root: string): AsyncGenerator<Buffer> {
  const converter = new XmlToJson();
  let first = true;
  let text = "[";
  const drain = () => {
    for (const obj of converter.take()) {
      text += `${first ? "\n" : ",\n"}${JSON.stringify(obj)}`;
      first = false;
    }
  };
  converter.write(xmlBatchHead(root).toString("utf8"));
  for await (const e of events) {
    converter.write(stripXmlDeclaration(e).body.toString("utf8"));
    converter.write("\n");
    drain();
    if (text.length >= CHUNK_BYTES) {
      yield Buffer.from(text);
      text = "";
    }
  }
  converter.write(xmlBatchTail(root).toString("utf8"));
  converter.close();
  drain();
  text += first ? "]\n" : "\n]\n";
  yield Buffer.from(text);
}

import type { JsMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { headersToRecord } from "../envelope.js";

/** How long the salvage of undecodable headers may wait for the broker. */
const STORED_HEADERS_TIMEOUT_MS = 2000;

export interface MessageHeaders {
  headers: Record<string, string>;
  /** Set when the client could not decode the header block: the message can never be handled. */
  decodeError?: unknown;
}

/**
 * A delivered message's headers as a record. nats.js refuses to decode header
 * values holding a bare CR or LF; for the dead letter such a message gets,
 * the headers are then read leniently from the copy the stream stores
 * (JetStream's STREAM.MSG.GET API returns the raw header block), so the DLQ
 * entry still names the ce-id and file. Failing that, the record is empty.
 */
export async function messageHeaders(nc: NatsConnection, msg: JsMsg): Promise<MessageHeaders> {
  try {
    return { headers: headersToRecord(msg.headers) };
  } catch (decodeError) {
    return { headers: await storedHeaders(nc, msg.info.stream, msg.seq), decodeError };
  }
}

async function storedHeaders(nc: NatsConnection, stream: string, seq: number): Promise<Record<string, string>> {
  try {
    const reply = await nc.request(`$JS.API.STREAM.MSG.GET.${stream}`, JSON.stringify({ seq }), {
      timeout: STORED_HEADERS_TIMEOUT_MS,
    });
    const hdrs = (reply.json<{ message?: { hdrs?: unknown } }>().message ?? {}).hdrs;
    return typeof hdrs === "string" ? lenientHeaderBlock(Buffer.from(hdrs, "base64")) : {};
  } catch {
    return {};
  }
}

/** Splits a raw `NATS/1.0` header block on any line break; the first value of a name wins. */
export function lenientHeaderBlock(block: Uint8Array): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of Buffer.from(block)
    .toString("utf8")
    .split(/\r\n|\r|\n/)
    .slice(1)) {
    const i = line.indexOf(":");
    if (i > 0 && out[line.slice(0, i)] === undefined) out[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return out;
}

import type { StoredMsg } from "@nats-io/jetstream";
import {
  DLQ_HEADERS,
  DLQ_SUBJECT_PREFIX,
  dlqSubject,
  headersToRecord,
  isStreamNotFound,
} from "@filerelay/core/internal";
import type { CommandContext } from "./commandContext.js";
import { NotFoundError } from "./usageError.js";

/** One message of the dead-letter stream, as core's deadLetter() wrote it. */
export interface DeadLetterEntry {
  /** Sequence in the DLQ stream (what `dlq show/replay/purge <seq>` takes). */
  seq: number;
  /** `filerelay.dlq.<group>`. */
  natsSubject: string;
  /** The envelope's ce-id (absent when the envelope itself was malformed). */
  id: string | null;
  filename: string | null;
  /** Sink group that gave up (filerelay-group, else from the subject). */
  group: string;
  code: string | null;
  error: string | null;
  deliveries: number | null;
  /** When the dead letter was stored (filerelay-dead-lettered-at, else the stream time). */
  time: string;
  /** Sequence of the original envelope in the envelope stream, when recorded. */
  streamSeq: number | null;
  bodyBytes: number;
  headers: Record<string, string>;
}

function toEntry(m: StoredMsg): DeadLetterEntry {
  const headers = headersToRecord(m.header);
  const deliveries = Number(headers[DLQ_HEADERS.deliveries]);
  const streamSeq = Number(headers[DLQ_HEADERS.streamSeq]);
  return {
    seq: m.seq,
    natsSubject: m.subject,
    id: headers["ce-id"] ?? null,
    filename: headers["ce-filename"] ?? null,
    group: headers[DLQ_HEADERS.group] ?? m.subject.slice(DLQ_SUBJECT_PREFIX.length + 1),
    code: headers[DLQ_HEADERS.code] ?? null,
    error: headers[DLQ_HEADERS.error] ?? null,
    deliveries: Number.isFinite(deliveries) && headers[DLQ_HEADERS.deliveries] ? deliveries : null,
    time: headers[DLQ_HEADERS.time] ?? m.time.toISOString(),
    streamSeq: Number.isFinite(streamSeq) && headers[DLQ_HEADERS.streamSeq] ? streamSeq : null,
    bodyBytes: m.data.length,
    headers,
  };
}

export interface StoredDeadLetter {
  entry: DeadLetterEntry;
  /** The stored body (the inline payload, or empty). */
  body: Uint8Array;
}

/**
 * Every dead letter (optionally of one group), in stream order. Reads with
 * direct "next message at or after seq on subject" gets (the DLQ stream is
 * provisioned with allow_direct), so no consumer is created on the DLQ stream
 * and nothing in it changes. An unprovisioned DLQ stream holds nothing.
 */
export async function readDeadLetters(ctx: CommandContext, group?: string): Promise<StoredDeadLetter[]> {
  try {
    const info = await ctx.jsm.streams.info(ctx.names.dlqStream);
    if (info.state.messages === 0) return [];
  } catch (err) {
    if (isStreamNotFound(err)) return [];
    throw err;
  }
  const filter = group ? dlqSubject(group) : `${DLQ_SUBJECT_PREFIX}.>`;
  const out: StoredDeadLetter[] = [];
  let seq = 1;
  for (;;) {
    const m = await ctx.jsm.direct.getMessage(ctx.names.dlqStream, { seq, next_by_subj: filter });
    if (!m) return out;
    out.push({ entry: toEntry(m), body: m.data });
    seq = m.seq + 1;
  }
}

/**
 * The dead letters a `<id|seq>` argument names: a number is a DLQ sequence;
 * anything else is a ce-id, which matches one entry per group that gave up.
 */
export async function findDeadLetters(ctx: CommandContext, ref: string, group?: string): Promise<StoredDeadLetter[]> {
  const all = await readDeadLetters(ctx, group);
  const matches = /^\d+$/.test(ref)
    ? all.filter((d) => d.entry.seq === Number(ref))
    : all.filter((d) => d.entry.id === ref);
  if (matches.length === 0) {
    throw new NotFoundError(
      `no dead letter ${/^\d+$/.test(ref) ? "with sequence" : "with ce-id"} ${ref} in ${ctx.names.dlqStream}${group ? ` for group ${group}` : ""}`,
    );
  }
  return matches;
}

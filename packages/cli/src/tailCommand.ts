import { DeliverPolicy, type JsMsg } from "@nats-io/jetstream";
import { describeError, headersToRecord, parseEnvelope } from "@filerelay/core";
import type { CommandContext } from "./commandContext.js";
import { formatBytes } from "./renderTable.js";
import { requireStream } from "./requireStream.js";

/** One line of `tail --json`. */
export interface TailLine {
  seq: number;
  natsSubject: string;
  /** When the stream stored it. */
  time: string;
  headers: Record<string, string>;
  bodyBytes: number;
  /** Whether the headers form a valid envelope (what a producer would accept). */
  valid: boolean;
  error?: string;
}

function toLine(m: JsMsg): TailLine {
  const headers = headersToRecord(m.headers);
  const line: TailLine = {
    seq: m.seq,
    natsSubject: m.subject,
    time: new Date(m.info.timestampNanos / 1_000_000).toISOString(),
    headers,
    bodyBytes: m.data.length,
    valid: true,
  };
  try {
    parseEnvelope(headers);
  } catch (err) {
    line.valid = false;
    line.error = describeError(err);
  }
  return line;
}

function human(line: TailLine): string {
  const h = line.headers;
  const what = `${h["ce-source"] ?? "?"}:${h["ce-subject"] ?? "?"}`;
  const size = h["ce-filesize"] ? formatBytes(Number(h["ce-filesize"])) : "?";
  const status = line.valid ? (h["ce-payload"] ?? "") : `INVALID: ${line.error ?? ""}`;
  return `${line.time}  #${line.seq}  ${h["ce-id"] ?? "-"}  ${what}  ${size}  ${status}\n`;
}

/**
 * Prints envelopes as they arrive on SUBJECT, through an ordered (ephemeral,
 * ack-none) consumer that starts at new messages: it takes nothing from any
 * sink group and disappears when tail stops. Runs until the signal aborts
 * (Ctrl-C / SIGTERM).
 */
export async function tailCommand(ctx: CommandContext): Promise<void> {
  await requireStream(ctx, ctx.names.stream);
  const consumer = await ctx.js.consumers.get(ctx.names.stream, {
    filter_subjects: ctx.config.SUBJECT,
    deliver_policy: DeliverPolicy.New,
  });
  const messages = await consumer.consume();
  const stop = () => messages.stop();
  if (ctx.signal.aborted) stop();
  else ctx.signal.addEventListener("abort", stop, { once: true });
  // The consumer exists now: anything published from here on is printed.
  ctx.err(`tailing ${ctx.config.SUBJECT} on ${ctx.names.stream} (Ctrl-C to stop)\n`);
  try {
    for await (const m of messages) {
      const line = toLine(m);
      ctx.out(ctx.json ? `${JSON.stringify(line)}\n` : human(line));
    }
  } finally {
    ctx.signal.removeEventListener("abort", stop);
    await consumer.delete().catch(() => undefined);
  }
}

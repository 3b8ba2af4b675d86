import { randomUUID } from "node:crypto";
import { headers as natsHeaders } from "@nats-io/transport-node";
import { FilerelayError, dlqSubject } from "@filerelay/core";
import { printJson, type CommandContext } from "./commandContext.js";
import { findDeadLetters, readDeadLetters, type DeadLetterEntry, type StoredDeadLetter } from "./deadLetters.js";
import { formatBytes, renderTable } from "./renderTable.js";
import { requireStream } from "./requireStream.js";
import { UsageError } from "./usageError.js";

export interface DlqArgs {
  action: "list" | "show" | "replay" | "purge";
  /** `<id|seq>` for show, replay and purge. */
  ref?: string | undefined;
  all: boolean;
  group?: string | undefined;
}

function shorten(text: string | null, max: number): string {
  if (!text) return "";
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** The entries an action applies to: `--all` (optionally one --group) or one `<id|seq>`. */
async function targets(ctx: CommandContext, args: DlqArgs): Promise<StoredDeadLetter[]> {
  if (args.all && args.ref !== undefined) {
    throw new UsageError(`give either --all or an <id|seq>, not both`, `dlq ${args.action}`);
  }
  if (!args.all && args.ref === undefined) {
    throw new UsageError(`say which dead letters: --all or an <id|seq>`, `dlq ${args.action}`);
  }
  return args.all ? readDeadLetters(ctx, args.group) : findDeadLetters(ctx, args.ref ?? "", args.group);
}

/**
 * One row per dead letter, as wide as the terminal (120 columns in a pipe):
 * the file name and the reason wrap instead of stretching every row.
 */
function listTable(entries: readonly DeadLetterEntry[], columns = process.stdout.columns || 120): string {
  const rows = entries.map((e) => [
    e.seq,
    e.id ?? "",
    shorten(e.filename, 120),
    e.group,
    e.code ?? "",
    shorten(e.error, 400),
    e.deliveries ?? "",
    e.time,
  ]);
  // Fixed columns at their content width (+2 padding, +1 border each); name and error share the rest.
  const natural = (i: number) =>
    Math.max(
      ["seq", "id", "filename", "group", "code", "error", "deliveries", "time"][i]!.length,
      ...rows.map((r) => String(r[i]).length),
    ) + 2;
  const fixed = [0, 1, 3, 4, 6, 7].reduce((sum, i) => sum + natural(i), 0) + 9;
  const free = Math.max(40, columns - fixed);
  const name = Math.min(natural(2), Math.max(12, Math.floor(free / 3)));
  const error = Math.max(20, Math.min(natural(5), free - name));
  return renderTable(["seq", "id", "filename", "group", "code", "error", "deliveries", "time"], rows, [
    null,
    null,
    name,
    null,
    null,
    error,
    null,
    null,
  ]);
}

async function list(ctx: CommandContext, args: DlqArgs): Promise<void> {
  const entries = (await readDeadLetters(ctx, args.group)).map((d) => d.entry);
  if (ctx.json) return printJson(ctx, entries);
  if (entries.length === 0) {
    ctx.out(`no dead letters in ${ctx.names.dlqStream}${args.group ? ` for group ${args.group}` : ""}\n`);
    return;
  }
  ctx.out(`${listTable(entries)}\n${entries.length} dead letter${entries.length === 1 ? "" : "s"}\n`);
}

async function show(ctx: CommandContext, args: DlqArgs): Promise<void> {
  if (args.ref === undefined) throw new UsageError("dlq show needs an <id|seq>", "dlq show");
  const entries = (await findDeadLetters(ctx, args.ref, args.group)).map((d) => d.entry);
  if (ctx.json) return printJson(ctx, entries);
  for (const e of entries) {
    ctx.out(
      `${renderTable(
        ["dead letter", "value"],
        [
          ["seq", e.seq],
          ["subject", e.natsSubject],
          ["group", e.group],
          ["code", e.code ?? ""],
          ["error", e.error ?? ""],
          ["deliveries", e.deliveries ?? ""],
          ["dead-lettered at", e.time],
          ["original stream seq", e.streamSeq ?? ""],
          ["body", formatBytes(e.bodyBytes)],
        ],
      )}\n`,
    );
    ctx.out(`${renderTable(["header", "value"], Object.entries(e.headers))}\n`);
  }
}

export interface ReplayResult {
  id: string | null;
  /** DLQ sequences removed (one per group that had given up on this envelope). */
  dlqSeqs: number[];
  subject: string;
  /** Sequence of the republished envelope in the envelope stream. */
  seq: number;
  msgId: string;
}

/**
 * Republishes each dead envelope to SUBJECT with its original headers and body,
 * minus the filerelay-* error headers, under a NEW Nats-Msg-Id (the original
 * ce-id is still within or past the duplicate window; either way JetStream
 * must not drop it), and deletes the DLQ entries only after the PubAck. An
 * envelope dead-lettered by several groups is published once: every group
 * receives the republished envelope anyway.
 */
async function replay(ctx: CommandContext, args: DlqArgs): Promise<void> {
  const chosen = await targets(ctx, args);
  if (chosen.length > 0) await requireStream(ctx, ctx.names.stream);
  const byEnvelope = new Map<string, StoredDeadLetter[]>();
  for (const d of chosen) {
    const key = d.entry.id ?? `seq:${d.entry.seq}`;
    byEnvelope.set(key, [...(byEnvelope.get(key) ?? []), d]);
  }
  const results: ReplayResult[] = [];
  for (const group of byEnvelope.values()) {
    const first = group[0];
    if (!first) continue;
    const h = natsHeaders();
    for (const [k, v] of Object.entries(first.entry.headers)) {
      const lower = k.toLowerCase();
      if (lower === "nats-msg-id" || lower.startsWith("filerelay-")) continue;
      h.set(k, v);
    }
    const msgId = randomUUID();
    let seq: number;
    try {
      const ack = await ctx.js.publish(ctx.config.SUBJECT, first.body, { headers: h, msgID: msgId });
      seq = ack.seq;
    } catch (err) {
      throw new FilerelayError(
        "PUBLISH_FAILED",
        `replaying dead letter ${first.entry.seq} to ${ctx.config.SUBJECT} failed; it stays in ${ctx.names.dlqStream}`,
        { cause: err },
      );
    }
    for (const d of group) await ctx.jsm.streams.deleteMessage(ctx.names.dlqStream, d.entry.seq, false);
    results.push({
      id: first.entry.id,
      dlqSeqs: group.map((d) => d.entry.seq),
      subject: ctx.config.SUBJECT,
      seq,
      msgId,
    });
  }
  if (ctx.json) return printJson(ctx, { replayed: results });
  if (results.length === 0) {
    ctx.out("nothing to replay\n");
    return;
  }
  ctx.out(
    `${renderTable(
      ["id", "from DLQ seq", "to subject", "stream seq", "new Nats-Msg-Id"],
      results.map((r) => [r.id ?? "", r.dlqSeqs.join(", "), r.subject, r.seq, r.msgId]),
    )}\n`,
  );
  ctx.out(`replayed ${results.length} envelope${results.length === 1 ? "" : "s"}\n`);
}

async function purge(ctx: CommandContext, args: DlqArgs): Promise<void> {
  let purged: number;
  if (args.all && args.ref === undefined) {
    // One purge request: also removes entries that arrive while we would list.
    await requireStream(ctx, ctx.names.dlqStream);
    const response = await ctx.jsm.streams.purge(
      ctx.names.dlqStream,
      args.group ? { filter: dlqSubject(args.group) } : undefined,
    );
    purged = response.purged;
  } else {
    const chosen = await targets(ctx, args);
    for (const d of chosen) await ctx.jsm.streams.deleteMessage(ctx.names.dlqStream, d.entry.seq, false);
    purged = chosen.length;
  }
  if (ctx.json) return printJson(ctx, { purged });
  ctx.out(`purged ${purged} dead letter${purged === 1 ? "" : "s"} from ${ctx.names.dlqStream}\n`);
}

export async function dlqCommand(ctx: CommandContext, args: DlqArgs): Promise<void> {
  switch (args.action) {
    case "list":
      return list(ctx, args);
    case "show":
      return show(ctx, args);
    case "replay":
      return replay(ctx, args);
    case "purge":
      return purge(ctx, args);
  }
}

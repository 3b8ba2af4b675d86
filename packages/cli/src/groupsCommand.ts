import type { ConsumerInfo } from "@nats-io/jetstream";
import { DLQ_SUBJECT_PREFIX, isStreamNotFound } from "@filerelay/core/internal";
import { printJson, type CommandContext } from "./commandContext.js";
import { renderTable } from "./renderTable.js";
import { requireStream } from "./requireStream.js";
import { NotFoundError, UsageError } from "./usageError.js";

export interface GroupsArgs {
  action: "list" | "remove";
  group?: string | undefined;
  yes: boolean;
}

export interface GroupEntry {
  name: string;
  filter: string | null;
  /** Envelopes not yet delivered to the group: the stream keeps them (and their payloads) for it. */
  pending: number;
  ackPending: number;
  redelivered: number;
  /** Pull requests waiting: roughly the group's running, idle members. */
  waiting: number;
  /** When the group last received a message (null: never). */
  lastDelivery: string | null;
  deadLetters: number;
}

function entryOf(ci: ConsumerInfo, deadLetters: Record<string, number>): GroupEntry {
  const last = ci.delivered.last_active;
  return {
    name: ci.name,
    filter: ci.config.filter_subject ?? null,
    pending: ci.num_pending,
    ackPending: ci.num_ack_pending,
    redelivered: ci.num_redelivered,
    waiting: ci.num_waiting,
    lastDelivery: last ? new Date(last).toISOString() : null,
    deadLetters: deadLetters[ci.name] ?? 0,
  };
}

async function deadLettersByGroup(ctx: CommandContext): Promise<Record<string, number>> {
  try {
    const info = await ctx.jsm.streams.info(ctx.names.dlqStream, { subjects_filter: `${DLQ_SUBJECT_PREFIX}.>` });
    const out: Record<string, number> = {};
    for (const [subject, n] of Object.entries(info.state.subjects ?? {})) {
      out[subject.slice(DLQ_SUBJECT_PREFIX.length + 1)] = n;
    }
    return out;
  } catch (err) {
    if (isStreamNotFound(err)) return {};
    throw err;
  }
}

/** The durable groups on the envelope stream (ephemeral readers such as `tail` are not groups). */
export async function listGroups(ctx: CommandContext): Promise<GroupEntry[]> {
  await requireStream(ctx, ctx.names.stream);
  const dead = await deadLettersByGroup(ctx);
  const groups: GroupEntry[] = [];
  for await (const ci of ctx.jsm.consumers.list(ctx.names.stream)) {
    if (ci.config.durable_name) groups.push(entryOf(ci, dead));
  }
  return groups.sort((a, b) => a.name.localeCompare(b.name));
}

async function list(ctx: CommandContext): Promise<void> {
  const groups = await listGroups(ctx);
  if (ctx.json) return printJson(ctx, groups);
  if (groups.length === 0) {
    ctx.out(`no durable groups on ${ctx.names.stream}\n`);
    return;
  }
  ctx.out(
    `${renderTable(
      ["group", "filter", "pending", "ack pending", "redelivered", "waiting", "last delivery", "dead letters"],
      groups.map((g) => [
        g.name,
        g.filter ?? "",
        g.pending,
        g.ackPending,
        g.redelivered,
        g.waiting,
        g.lastDelivery ?? "never",
        g.deadLetters,
      ]),
    )}\n`,
  );
  const stale = groups.filter((g) => g.waiting === 0 && g.pending > 0);
  if (stale.length > 0) {
    ctx.out(
      `${stale.map((g) => g.name).join(", ")}: pending with no member waiting. The stream keeps every envelope ` +
        "(and its payload) until each group takes it; if nobody will run such a group again, remove it " +
        "with `filerelay groups remove <group> --yes`.\n",
    );
  }
}

/** A delivery this recent means a member may still be working (busy members have no pull waiting). */
export const RECENT_DELIVERY_MS = 30_000;

/** Why a group looks like it still has running members, or undefined when it looks abandoned. */
export function memberActivity(group: GroupEntry, now: number): string | undefined {
  if (group.waiting > 0) return `has ${group.waiting} member pull request(s) waiting`;
  if (group.ackPending > 0 && group.lastDelivery !== null) {
    const ago = now - Date.parse(group.lastDelivery);
    if (ago < RECENT_DELIVERY_MS) return `received a delivery ${Math.round(ago / 1000)} s ago`;
  }
  return undefined;
}

async function remove(ctx: CommandContext, args: GroupsArgs): Promise<void> {
  const name = args.group ?? "";
  await requireStream(ctx, ctx.names.stream);
  const groups = await listGroups(ctx);
  const group = groups.find((g) => g.name === name);
  if (!group) {
    throw new NotFoundError(
      `no durable group ${JSON.stringify(name)} on ${ctx.names.stream}; groups: ${groups.map((g) => g.name).join(", ") || "none"}`,
    );
  }
  if (!args.yes) {
    throw new UsageError(
      `removing group ${name} discards its place in ${ctx.names.stream}: ${group.pending} pending and ` +
        `${group.ackPending} unacknowledged envelope(s) will never reach it. Add --yes to remove it`,
      "groups remove",
    );
  }
  const busy = memberActivity(group, Date.now());
  if (busy !== undefined) {
    throw new UsageError(
      `group ${name} ${busy}: stop its members first (a running member would create the group again), ` +
        `then try again after ${RECENT_DELIVERY_MS / 1000} s`,
      "groups remove",
    );
  }
  await ctx.jsm.consumers.delete(ctx.names.stream, name);
  const remaining = await ctx.jsm.streams.info(ctx.names.stream);
  const result = {
    removed: name,
    pending: group.pending,
    ackPending: group.ackPending,
    streamMessages: remaining.state.messages,
  };
  if (ctx.json) return printJson(ctx, result);
  ctx.out(
    `removed group ${name} (${group.pending} pending, ${group.ackPending} unacknowledged). ` +
      `${ctx.names.stream} now holds ${remaining.state.messages} envelope(s) for the remaining groups; ` +
      `payload objects no envelope references any more are removed by the payload sweep.\n` +
      `A consumer that lists ${name} in SINK_GROUPS creates it again at its next start: remove it there too.\n`,
  );
}

export async function groupsCommand(ctx: CommandContext, args: GroupsArgs): Promise<void> {
  return args.action === "list" ? list(ctx) : remove(ctx, args);
}

import type { StreamInfo } from "@nats-io/jetstream";
import { DLQ_SUBJECT_PREFIX, isStreamNotFound } from "@filerelay/core/internal";
import { printJson, type CommandContext } from "./commandContext.js";
import { formatBytes, renderTable } from "./renderTable.js";

export interface StreamStatus {
  name: string;
  role: "envelopes" | "dead letters";
  exists: boolean;
  subjects: string[];
  messages: number;
  bytes: number;
  consumers: number;
}

export interface GroupStatus {
  name: string;
  filter: string | null;
  /** Envelopes not yet delivered to the group. */
  pending: number;
  /** Delivered, not yet acknowledged. */
  ackPending: number;
  redelivered: number;
  /** Pull requests waiting: roughly the group's idle members. */
  waiting: number;
}

export interface BucketStatus {
  name: string;
  kind: "kv" | "object";
  stream: string;
  exists: boolean;
  messages: number;
  bytes: number;
}

export interface Status {
  streams: StreamStatus[];
  groups: GroupStatus[];
  dlq: { messages: number; bytes: number; byGroup: Record<string, number> };
  buckets: BucketStatus[];
}

async function streamInfo(ctx: CommandContext, name: string, subjectsFilter?: string): Promise<StreamInfo | null> {
  try {
    return await ctx.jsm.streams.info(name, subjectsFilter ? { subjects_filter: subjectsFilter } : {});
  } catch (err) {
    // A stream not provisioned yet is a state to report, not a failure.
    if (isStreamNotFound(err)) return null;
    throw err;
  }
}

function streamStatus(name: string, role: StreamStatus["role"], info: StreamInfo | null): StreamStatus {
  return {
    name,
    role,
    exists: info !== null,
    subjects: info?.config.subjects ?? [],
    messages: info?.state.messages ?? 0,
    bytes: info?.state.bytes ?? 0,
    consumers: info?.state.consumer_count ?? 0,
  };
}

/** Gathers the deployment's state: streams, durable groups, DLQ per group, buckets. */
export async function collectStatus(ctx: CommandContext): Promise<Status> {
  const { names } = ctx;
  const files = await streamInfo(ctx, names.stream);
  const dlq = await streamInfo(ctx, names.dlqStream, `${DLQ_SUBJECT_PREFIX}.>`);

  const groups: GroupStatus[] = [];
  if (files) {
    for await (const ci of ctx.jsm.consumers.list(names.stream)) {
      // Ephemeral consumers (tail, payload readers) come and go; groups are durable.
      if (!ci.config.durable_name) continue;
      groups.push({
        name: ci.name,
        filter: ci.config.filter_subject ?? null,
        pending: ci.num_pending,
        ackPending: ci.num_ack_pending,
        redelivered: ci.num_redelivered,
        waiting: ci.num_waiting,
      });
    }
    groups.sort((a, b) => a.name.localeCompare(b.name));
  }

  const byGroup: Record<string, number> = {};
  for (const [subject, count] of Object.entries(dlq?.state.subjects ?? {})) {
    byGroup[subject.slice(DLQ_SUBJECT_PREFIX.length + 1)] = count;
  }

  const bucketSpecs: { name: string; kind: BucketStatus["kind"]; stream: string }[] = [
    { name: names.payloadBucket, kind: "object", stream: names.payloadStream },
    { name: names.fingerprintBucket, kind: "kv", stream: names.fingerprintStream },
    { name: names.claimBucket, kind: "kv", stream: names.claimStream },
  ];
  const buckets: BucketStatus[] = [];
  for (const spec of bucketSpecs) {
    const info = await streamInfo(ctx, spec.stream);
    buckets.push({
      ...spec,
      exists: info !== null,
      messages: info?.state.messages ?? 0,
      bytes: info?.state.bytes ?? 0,
    });
  }

  return {
    streams: [streamStatus(names.stream, "envelopes", files), streamStatus(names.dlqStream, "dead letters", dlq)],
    groups,
    dlq: { messages: dlq?.state.messages ?? 0, bytes: dlq?.state.bytes ?? 0, byGroup },
    buckets,
  };
}

export async function statusCommand(ctx: CommandContext): Promise<void> {
  const status = await collectStatus(ctx);
  if (ctx.json) {
    printJson(ctx, status);
    return;
  }
  const missing = "(not provisioned)";
  ctx.out(
    `${renderTable(
      ["stream", "role", "subjects", "messages", "bytes", "consumers"],
      status.streams.map((s) =>
        s.exists
          ? [s.name, s.role, s.subjects.join(", "), s.messages, formatBytes(s.bytes), s.consumers]
          : [s.name, s.role, missing, "", "", ""],
      ),
    )}\n`,
  );
  ctx.out(
    status.groups.length === 0
      ? "no durable groups on the stream\n"
      : `${renderTable(
          ["group", "filter", "pending", "ack pending", "redelivered", "waiting", "dead letters"],
          status.groups.map((g) => [
            g.name,
            g.filter ?? "",
            g.pending,
            g.ackPending,
            g.redelivered,
            g.waiting,
            status.dlq.byGroup[g.name] ?? 0,
          ]),
        )}\n`,
  );
  ctx.out(
    `${renderTable(
      ["bucket", "kind", "entries (messages)", "bytes"],
      status.buckets.map((b) =>
        b.exists ? [b.name, b.kind, b.messages, formatBytes(b.bytes)] : [b.name, b.kind, missing, ""],
      ),
    )}\n`,
  );
  const payloads = status.buckets.find((b) => b.kind === "object" && b.exists && b.bytes > 0);
  if (payloads) {
    ctx.out(
      `${payloads.name}: files too large to travel inline whose envelope a group has not acknowledged yet ` +
        "(pending, in flight or dead-lettered), plus orphaned uploads the payload sweep removes after " +
        "PAYLOAD_ORPHAN_GRACE_MS; steady growth usually means a group nobody runs (`filerelay groups list`)\n",
    );
  }
  const perGroup = Object.entries(status.dlq.byGroup).map(([g, n]) => `${g}: ${n}`);
  ctx.out(
    `dead letters: ${status.dlq.messages} (${formatBytes(status.dlq.bytes)})${perGroup.length > 0 ? ` — ${perGroup.join(", ")}` : ""}\n`,
  );
}

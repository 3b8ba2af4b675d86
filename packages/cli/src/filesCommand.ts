import {
  FILE_STATES,
  openStatusLedger,
  parseDuration,
  type FileRecord,
  type FileState,
  type StatusLedger,
  type StatusUpdate,
} from "@filerelay/core/internal";
import { printJson, type CommandContext } from "./commandContext.js";
import { formatBytes, renderTable } from "./renderTable.js";
import { requireStream } from "./requireStream.js";
import { NotFoundError, UsageError } from "./usageError.js";

export interface FilesArgs {
  action: "list" | "show" | "watch";
  id?: string | undefined;
  state?: string | undefined;
  source?: string | undefined;
  path?: string | undefined;
  job?: string | undefined;
  since?: string | undefined;
  limit?: string | undefined;
}

/** States after which nothing more happens to a file version. */
const FINAL: ReadonlySet<FileState> = new Set(["delivered", "failed", "error"]);

/** Checks the arguments before anything is sent to the broker (usage errors exit 2). */
export function checkFilesArgs(args: FilesArgs): void {
  const command = `files ${args.action}`;
  if (args.state !== undefined && !(FILE_STATES as readonly string[]).includes(args.state)) {
    throw new UsageError(
      `--state must be one of ${FILE_STATES.join(", ")}, got ${JSON.stringify(args.state)}`,
      command,
    );
  }
  if (args.since !== undefined && parseDuration(args.since) === undefined) {
    throw new UsageError(
      `--since takes a duration such as 90s, 15m, 1h or 7d, got ${JSON.stringify(args.since)}`,
      command,
    );
  }
  if (args.limit !== undefined && !/^[1-9]\d*$/.test(args.limit)) {
    throw new UsageError(`--limit takes a positive whole number, got ${JSON.stringify(args.limit)}`, command);
  }
  if (args.path !== undefined && args.source === undefined) {
    throw new UsageError("--path needs --source (a relative path is only unique within its source)", command);
  }
  if (args.action === "show" && (args.id === undefined) === (args.path === undefined)) {
    throw new UsageError("give either an <id> or --source S --path P", command);
  }
}

/**
 * `filerelay files list|show|watch`: the status ledger (where is my file?).
 * The CLI only reads it: the services create it.
 */
export async function filesCommand(ctx: CommandContext, args: FilesArgs): Promise<void> {
  checkFilesArgs(args);
  await requireStream(ctx, ctx.names.statusStream);
  const ledger = await openStatusLedger(ctx.nc, { stream: ctx.config.STREAM, by: "cli", provision: false });
  try {
    switch (args.action) {
      case "list":
        return await list(ctx, ledger, args);
      case "show":
        return await show(ctx, ledger, args);
      case "watch":
        return await watch(ctx, ledger, args);
    }
  } finally {
    await ledger.close();
  }
}

async function list(ctx: CommandContext, ledger: StatusLedger, args: FilesArgs): Promise<void> {
  const records = await ledger.list({
    state: args.state as FileState | undefined,
    source: args.source,
    path: args.path,
    job: args.job,
    since: args.since !== undefined ? new Date(Date.now() - (parseDuration(args.since) ?? 0)) : undefined,
    limit: args.limit !== undefined ? Number(args.limit) : 50,
  });
  if (ctx.json) return printJson(ctx, { files: records });
  if (records.length === 0) {
    ctx.out("no files match\n");
    return;
  }
  ctx.out(
    `${renderTable(
      ["id", "state", "source", "path", "size", "updated", "groups"],
      records.map((r) => [
        r.id,
        r.state,
        r.source,
        r.subject,
        r.size === null ? "?" : formatBytes(r.size),
        r.updatedAt,
        Object.entries(r.deliveries)
          .map(([g, d]) => `${g}: ${d.state}${d.code ? ` (${d.code})` : ""}`)
          .join("\n"),
      ]),
    )}\n`,
  );
}

async function show(ctx: CommandContext, ledger: StatusLedger, args: FilesArgs): Promise<void> {
  let record: FileRecord | undefined;
  let history: FileRecord[] = [];
  if (args.id !== undefined) {
    record = await ledger.get(args.id);
    if (!record) throw new NotFoundError(`the status ledger has no file ${args.id} (never seen, or expired)`);
  } else {
    history = await ledger.history(args.source ?? "", args.path ?? "");
    const latest = history[0];
    if (!latest) throw new NotFoundError(`the status ledger has no file ${args.source ?? ""}:${args.path ?? ""}`);
    record = await ledger.get(latest.id);
    if (!record) throw new NotFoundError(`file ${latest.id} left the status ledger meanwhile`);
  }
  if (ctx.json) {
    printJson(
      ctx,
      args.id !== undefined
        ? record
        : { ...record, versions: history.map((h) => ({ id: h.id, state: h.state, updatedAt: h.updatedAt })) },
    );
    return;
  }
  ctx.out(describe(record));
  if (history.length > 1) {
    ctx.out(`\nversions of ${record.source}:${record.subject} (newest first):\n`);
    ctx.out(
      `${renderTable(
        ["id", "state", "updated"],
        history.map((h) => [h.id, h.state, h.updatedAt]),
      )}\n`,
    );
  }
}

function describe(r: FileRecord): string {
  const lines = [
    `id        ${r.id}`,
    `file      ${r.source}:${r.subject}`,
    `name      ${r.filename}${r.contentType ? ` (${r.contentType})` : ""}`,
    `size      ${r.size === null ? "?" : `${r.size} bytes (${formatBytes(r.size)})`}`,
    `sha256    ${r.sha256 ?? "?"}`,
    `state     ${r.state}`,
  ];
  if (r.jobId) lines.push(`job       ${r.jobId}`);
  if (r.parentId) lines.push(`parent    ${r.parentId}`);
  if (r.children.length > 0) lines.push(`children  ${r.children.join(", ")}`);
  if (r.error) {
    lines.push(`error     [${r.error.code ?? "?"}] ${r.error.reason ?? ""}`);
    if (r.error.location) lines.push(`moved to  ${r.error.location}`);
  }
  lines.push("", "timeline:");
  for (const e of r.events) {
    const d = e.group !== undefined ? r.deliveries[e.group] : undefined;
    const detail = d ? (d.location ?? (d.code ? `[${d.code}] ${d.reason ?? ""}` : "")) : "";
    lines.push(`  ${e.at}  ${e.event.padEnd(11)} ${(e.group ?? e.by).padEnd(16)} ${detail}`.trimEnd());
  }
  const groups = Object.entries(r.deliveries);
  if (groups.length > 0) {
    lines.push("", "deliveries:");
    for (const [g, d] of groups) {
      lines.push(
        `  ${g}: ${d.state}, ${d.attempts} attempt${d.attempts === 1 ? "" : "s"}${d.location ? `, ${d.location}` : ""}${d.code ? `, [${d.code}] ${d.reason ?? ""}` : ""}`,
      );
    }
  }
  return `${lines.join("\n")}\n`;
}

/**
 * Live updates: JSON lines with --json, else one line per state change and a
 * progress bar for bytes. With an id it ends when the file reaches a final
 * state; without, it runs until Ctrl-C (exit 0).
 */
async function watch(ctx: CommandContext, ledger: StatusLedger, args: FilesArgs): Promise<void> {
  const w = ledger.watch({ id: args.id });
  const stop = () => w.close();
  if (ctx.signal.aborted) stop();
  else ctx.signal.addEventListener("abort", stop, { once: true });
  await w.listening;
  ctx.err(`watching ${args.id ?? "every file"} (Ctrl-C to stop)\n`);
  const tty = process.stdout.isTTY && !ctx.json;
  let bar = false;
  try {
    for await (const u of w) {
      if (ctx.json) {
        const { record: _record, ...line } = u;
        ctx.out(`${JSON.stringify({ file_id: u.id, ...line })}\n`);
      } else if (u.kind === "progress") {
        if (tty) {
          ctx.out(`\r${progressLine(u)}`);
          bar = true;
        } else {
          ctx.out(`${progressLine(u)}\n`);
        }
      } else {
        if (bar) ctx.out("\n");
        bar = false;
        const where = u.group && u.record ? (u.record.deliveries[u.group]?.location ?? "") : "";
        ctx.out(
          `${new Date().toISOString()}  ${u.id}  ${u.state}${u.group ? `  ${u.group}` : ""}  ${where}`.trimEnd() + "\n",
        );
      }
      if (args.id !== undefined && u.kind === "state" && FINAL.has(u.state)) break;
    }
  } finally {
    if (bar) ctx.out("\n");
    ctx.signal.removeEventListener("abort", stop);
    w.close();
  }
}

function progressLine(u: StatusUpdate): string {
  const width = 30;
  const frac = u.progress ?? 0;
  const filled = Math.round(frac * width);
  const total = u.total === null ? "?" : formatBytes(u.total);
  return `${u.id.slice(0, 8)} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${(frac * 100).toFixed(1).padStart(5)}%  ${formatBytes(u.bytes)} / ${total}${u.group ? `  ${u.group}` : ""}`;
}

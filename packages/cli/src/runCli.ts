import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import {
  ConfigError,
  connectNats,
  describeError,
  EXIT_CONFIG,
  isFilerelayError,
  jetstreamNames,
  silentLogger,
  type Env,
} from "@filerelay/core/internal";
import { loadCliConfig } from "./cliConfig.js";
import type { CommandContext } from "./commandContext.js";
import { dlqCommand, type DlqArgs } from "./dlqCommand.js";
import { checkFilesArgs, filesCommand, type FilesArgs } from "./filesCommand.js";
import { groupsCommand } from "./groupsCommand.js";
import { sendCommand } from "./sendCommand.js";
import { statusCommand } from "./statusCommand.js";
import { tailCommand } from "./tailCommand.js";
import { NotFoundError, UsageError } from "./usageError.js";

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

const GLOBAL_HELP = `Options for every command:
  --server <urls>    NATS server URL(s), comma-separated (default: $NATS_URL or nats://127.0.0.1:4222)
  --stream <name>    envelope stream (default: $STREAM or FILES)
  --subject <subj>   envelope subject (default: $SUBJECT or files.input)
  --json             machine-readable output (one JSON document; JSON lines for tail)
  -h, --help         help for the command
  -V, --version      print the version

Credentials and TLS come from NATS_CREDS, NATS_TOKEN, NATS_USER/NATS_PASSWORD,
NATS_NKEY_SEED_FILE, NATS_TLS_CA/CERT/KEY (and .env in the working directory).
Exit status: 0 ok, 1 failure, 2 usage error, 78 bad configuration.`;

const HELP: Record<string, string> = {
  "": `Usage: filerelay <command> [options]

Commands:
  status                         streams, sink groups (pending, ack pending, redelivered), DLQ, buckets
  dlq list [--group g]           dead letters: seq, id, filename, group, error code, error, deliveries, time
  dlq show <id|seq>              one dead letter's headers and metadata
  dlq replay (--all | <id|seq>)  republish dead envelopes to the subject and remove them from the DLQ
  dlq purge (--all | <id|seq>)   delete dead letters
  files list [--state s] ...     the status ledger: files by state, source, job, time (newest first)
  files show <id>                one file's record: timeline, where each group delivered it, errors
  files watch [<id>]             live state changes and byte progress (Ctrl-C stops)
  send <file> [--source s]       publish one file as the consumer would
  tail                           print envelopes as they pass (Ctrl-C stops)
  groups list                    durable sink groups: pending, last delivery, dead letters
  groups remove <group> --yes    delete an abandoned group (the stream stops keeping envelopes for it)
  help [command]                 this help, or a command's

Run \`filerelay <command> --help\` for details.

${GLOBAL_HELP}`,
  status: `Usage: filerelay status [--json]

Shows the envelope stream and the dead-letter stream (messages, bytes), every
durable sink group on the envelope stream (pending = not yet delivered, ack
pending = delivered and not acknowledged, redelivered, dead letters), and the
payload / fingerprint / claim buckets with their sizes.

The payload bucket's bytes are files larger than INLINE_MAX_BYTES whose
envelope some group has not acknowledged yet (pending, being written, or dead-
lettered: kept for \`dlq replay\`), plus orphans (an upload whose envelope was
never published), which the payload sweep removes after PAYLOAD_ORPHAN_GRACE_MS.
A payload bucket that keeps growing usually means a group nobody runs any more
(see \`filerelay groups list\`).

${GLOBAL_HELP}`,
  dlq: `Usage: filerelay dlq <list|show|replay|purge> ...

  dlq list [--group g]                   one row per dead letter
  dlq show <id|seq> [--group g]          headers and metadata
  dlq replay (--all | <id|seq>) [--group g]
  dlq purge (--all | <id|seq>) [--group g]

<seq> is the sequence in the dead-letter stream (the first column of dlq list);
<id> is the envelope's ce-id, which matches one entry per group that gave up.

${GLOBAL_HELP}`,
  "dlq list": `Usage: filerelay dlq list [--group g] [--json]

One row per dead letter: DLQ sequence, ce-id, file name, group, error code,
error, deliveries and when it was dead-lettered. --group shows one group's.

${GLOBAL_HELP}`,
  "dlq show": `Usage: filerelay dlq show <id|seq> [--group g] [--json]

Prints every header of the dead letter (the envelope plus filerelay-error,
filerelay-error-code, filerelay-deliveries, filerelay-group ...) and its
metadata. A ce-id dead-lettered by several groups shows one entry per group.

${GLOBAL_HELP}`,
  "dlq replay": `Usage: filerelay dlq replay (--all | <id|seq>) [--group g] [--json]

Republishes each dead envelope (headers and body) to the subject (--subject,
default $SUBJECT) with a new Nats-Msg-Id, so JetStream's duplicate window does
not drop it, and without the filerelay-* error headers; once the stream has
acknowledged it, the DLQ entry is deleted. Every sink group on the subject
receives the replayed envelope again (the sinks are idempotent on content).

${GLOBAL_HELP}`,
  "dlq purge": `Usage: filerelay dlq purge (--all | <id|seq>) [--group g] [--json]

Deletes dead letters for good: --all (of one --group, or every group), or the
entries an <id|seq> names.

${GLOBAL_HELP}`,
  send: `Usage: filerelay send <file> [--source s] [--content-type t] [--verbose] [--json]

Publishes one file with the consumer's envelope: ce-id from the same
fingerprint, ce-subject = the file name, ce-source = --source or the name of
the file's directory; inline up to INLINE_MAX_BYTES (262144), else uploaded to
the payload Object Store first (with a progress bar, rate and ETA on a
terminal). Prints one line per file; --verbose adds every envelope header.

${GLOBAL_HELP}`,
  files: `Usage: filerelay files <list|show|watch> ...

  files list [--state S] [--source S] [--path P] [--job J] [--since 1h] [--limit N]
  files show <id> | --source S --path P
  files watch [<id>]

Where is my file? The services record each file version in the status ledger
(stream <STREAM>_STATUS, kept STATUS_MAX_AGE): received/published by its
source, then in_progress, delivered (with its location) or failed (with the
dead-letter code) per sink group. States: received, published, delivered,
failed, error (the source gave up; see its ERROR_DIR).

${GLOBAL_HELP}`,
  "files list": `Usage: filerelay files list [--state S] [--source S] [--path P] [--job J] [--since 1h] [--limit N] [--json]

Newest first (by last update), at most --limit (default 50). --state is one
of received, published, delivered, failed, error; --since a duration (90s,
15m, 1h, 7d); --path (with --source) every version of one relative path.

${GLOBAL_HELP}`,
  "files show": `Usage: filerelay files show (<id> | --source S --path P) [--json]

One file version's record: what it is, its state, a timeline (detected,
received, published, each group's delivery), where each group put it, and
errors. With --source/--path: the latest version, and a list of the others.

${GLOBAL_HELP}`,
  "files watch": `Usage: filerelay files watch [<id>] [--json]

Prints state changes and byte progress as they happen (JSON lines with
--json: {file_id, kind, state, bytes, total, progress, group}). With an <id>
it ends once the file is delivered, failed or in error; without, Ctrl-C stops.

${GLOBAL_HELP}`,
  groups: `Usage: filerelay groups <list|remove> ...

  groups list [--json]                   one row per durable group on the stream
  groups remove <group> --yes [--json]   delete an abandoned group's durable

${GLOBAL_HELP}`,
  "groups list": `Usage: filerelay groups list [--json]

One row per durable sink group on the envelope stream: pending (envelopes not
yet delivered to it), ack pending, redelivered, waiting (pull requests: its
running idle members), last delivery and dead letters. The stream is an
interest stream: it keeps every envelope, and its payload object, until each
group has taken it, so a group nobody runs any more holds all new traffic.

${GLOBAL_HELP}`,
  "groups remove": `Usage: filerelay groups remove <group> --yes [--json]

Deletes the group's durable consumer. Envelopes no other group still needs
leave the stream, and their payload objects are removed by the payload sweep.
Refused while members are running (they would create it again); a consumer
that lists the group in SINK_GROUPS also creates it again at its next start.
Without --yes, shows what would be discarded and does nothing.

${GLOBAL_HELP}`,
  tail: `Usage: filerelay tail [--json]

Prints each envelope published on the subject from now on, one line each
(JSON lines with --json), through an ephemeral ordered consumer that takes
nothing away from the sink groups. Ctrl-C stops.

${GLOBAL_HELP}`,
};

const OPTIONS = {
  server: { type: "string" },
  stream: { type: "string" },
  subject: { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
  group: { type: "string" },
  all: { type: "boolean" },
  source: { type: "string" },
  "content-type": { type: "string" },
  state: { type: "string" },
  path: { type: "string" },
  job: { type: "string" },
  since: { type: "string" },
  limit: { type: "string" },
  yes: { type: "boolean" },
  version: { type: "boolean", short: "V" },
  verbose: { type: "boolean", short: "v" },
} as const;

type OptionName = keyof typeof OPTIONS;
const GLOBAL_OPTIONS: readonly OptionName[] = ["server", "stream", "subject", "json", "help", "version"];
const COMMAND_OPTIONS: Record<string, readonly OptionName[]> = {
  status: [],
  "dlq list": ["group"],
  "dlq show": ["group"],
  "dlq replay": ["group", "all"],
  "dlq purge": ["group", "all"],
  send: ["source", "content-type", "verbose"],
  tail: [],
  "files list": ["state", "source", "path", "job", "since", "limit"],
  "files show": ["source", "path"],
  "files watch": [],
  "groups list": [],
  "groups remove": ["yes"],
};
/** How many positional arguments after the command words each command takes. */
const COMMAND_ARGS: Record<string, { min: number; max: number; name: string }> = {
  status: { min: 0, max: 0, name: "" },
  "dlq list": { min: 0, max: 0, name: "" },
  "dlq show": { min: 1, max: 1, name: "<id|seq>" },
  "dlq replay": { min: 0, max: 1, name: "<id|seq>" },
  "dlq purge": { min: 0, max: 1, name: "<id|seq>" },
  send: { min: 1, max: 1, name: "<file>" },
  tail: { min: 0, max: 0, name: "" },
  "files list": { min: 0, max: 0, name: "" },
  "files show": { min: 0, max: 1, name: "<id>" },
  "files watch": { min: 0, max: 1, name: "<id>" },
  "groups list": { min: 0, max: 0, name: "" },
  "groups remove": { min: 1, max: 1, name: "<group>" },
};

/** Commands made of two words, and their second words. */
const SUBCOMMANDS: Record<string, readonly string[]> = {
  dlq: ["list", "show", "replay", "purge"],
  files: ["list", "show", "watch"],
  groups: ["list", "remove"],
};

/** "a, b or c" */
const oneOf = (words: readonly string[]) =>
  words.length > 1 ? `${words.slice(0, -1).join(", ")} or ${words[words.length - 1] ?? ""}` : (words[0] ?? "");

/** The installed package's version, for --version. */
function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version?: string };
  return pkg.version ?? "unknown";
}

/**
 * parseArgs' own messages end in advice with unbalanced quotes; say what is
 * wrong with the one argument instead.
 */
function argumentProblem(err: unknown, argv: readonly string[]): string {
  const code = (err as { code?: unknown }).code;
  const known = new Set<string>();
  for (const [name, spec] of Object.entries(OPTIONS)) {
    known.add(`--${name}`);
    if ("short" in spec) known.add(`-${spec.short}`);
  }
  if (code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
    const bad = argv.find((a) => a.startsWith("-") && a !== "--" && !known.has(a.split("=")[0] ?? a));
    if (bad) return `unknown option ${bad.split("=")[0] ?? bad}`;
  }
  if (code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") {
    const name = /'(-[-\w]+)/.exec((err as Error).message)?.[1];
    if (name) {
      const spec = OPTIONS[name.replace(/^-+/, "") as OptionName] as { type: string } | undefined;
      return spec?.type === "boolean" ? `${name} takes no value` : `${name} needs a value`;
    }
  }
  return (err as Error).message;
}

export interface CliIo {
  out: (text: string) => void;
  err: (text: string) => void;
  env: Env;
  /** Aborted by Ctrl-C / SIGTERM (tail stops; other commands abandon their work). */
  signal: AbortSignal;
}

interface Invocation {
  command: string;
  positionals: string[];
  values: { [K in OptionName]?: (typeof OPTIONS)[K]["type"] extends "string" ? string : boolean };
}

function parse(argv: readonly string[]): Invocation | { help: string } {
  let parsed;
  try {
    parsed = parseArgs({ args: [...argv], options: OPTIONS, allowPositionals: true, strict: true });
  } catch (err) {
    const words = argv.filter((a) => !a.startsWith("-")).slice(0, 2);
    const command = words[0] && SUBCOMMANDS[words[0]] && words[1] ? `${words[0]} ${words[1]}` : words[0];
    throw new UsageError(argumentProblem(err, argv), command && HELP[command] ? command : undefined, { cause: err });
  }
  const { values, positionals } = parsed;
  if (values.version) return { help: version() };
  if (positionals[0] === "help") {
    // `filerelay help dlq replay` = `filerelay dlq replay --help`.
    const topic = positionals.slice(1).join(" ");
    const text = HELP[topic];
    if (text === undefined) throw new UsageError(`no help for ${JSON.stringify(topic)}`);
    return { help: text };
  }
  const [first, second] = positionals;
  if (first === undefined) {
    if (values.help) return { help: HELP[""] ?? "" };
    throw new UsageError("no command given");
  }
  let command = first;
  let rest = positionals.slice(1);
  const actions = SUBCOMMANDS[first];
  if (actions) {
    if (second === undefined) {
      if (values.help) return { help: HELP[first] ?? "" };
      throw new UsageError(`${first} needs an action: ${oneOf(actions)}`, first);
    }
    command = `${first} ${second}`;
    rest = positionals.slice(2);
  }
  const spec = COMMAND_ARGS[command];
  const allowed = COMMAND_OPTIONS[command];
  if (!spec || !allowed) {
    throw actions
      ? new UsageError(`unknown ${first} action ${JSON.stringify(second)}; expected ${oneOf(actions)}`, first)
      : new UsageError(`unknown command ${JSON.stringify(first)}`);
  }
  if (values.help) return { help: HELP[command] ?? "" };
  for (const name of Object.keys(values) as OptionName[]) {
    if (!GLOBAL_OPTIONS.includes(name) && !allowed.includes(name)) {
      throw new UsageError(`${command} does not take --${name}`, command);
    }
  }
  if (rest.length < spec.min) throw new UsageError(`${command} needs ${spec.name}`, command);
  if (rest.length > spec.max) {
    throw new UsageError(
      `${command} takes ${spec.max === 0 ? "no arguments" : `one ${spec.name}`}, got ${rest.map((r) => JSON.stringify(r)).join(" ")}`,
      command,
    );
  }
  if (command === "dlq replay" || command === "dlq purge") {
    // Checked before connecting: a usage error must not depend on the broker.
    if (values.all === true && rest.length > 0)
      throw new UsageError("give either --all or an <id|seq>, not both", command);
    if (values.all !== true && rest.length === 0)
      throw new UsageError("say which dead letters: --all or an <id|seq>", command);
  }
  if (command.startsWith("files ")) checkFilesArgs(filesArgs(command, rest, values));
  return { command, positionals: rest, values };
}

function filesArgs(command: string, positionals: readonly string[], values: Invocation["values"]): FilesArgs {
  return {
    action: command.slice("files ".length) as FilesArgs["action"],
    id: positionals[0],
    state: values.state,
    source: values.source,
    path: values.path,
    job: values.job,
    since: values.since,
    limit: values.limit,
  };
}

async function dispatch(ctx: CommandContext, inv: Invocation): Promise<void> {
  const { command, positionals, values } = inv;
  switch (command) {
    case "status":
      return statusCommand(ctx);
    case "send":
      return sendCommand(ctx, {
        file: positionals[0] ?? "",
        source: values.source,
        contentType: values["content-type"],
        verbose: values.verbose === true,
      });
    case "tail":
      return tailCommand(ctx);
    case "files list":
    case "files show":
    case "files watch":
      return filesCommand(ctx, filesArgs(command, positionals, values));
    case "groups list":
    case "groups remove":
      return groupsCommand(ctx, {
        action: command === "groups list" ? "list" : "remove",
        group: positionals[0],
        yes: values.yes === true,
      });
    default: {
      const action = command.slice("dlq ".length) as DlqArgs["action"];
      return dlqCommand(ctx, { action, ref: positionals[0], all: values.all === true, group: values.group });
    }
  }
}

/**
 * Runs one CLI invocation and returns its exit status (the caller exits):
 * 0 ok, 1 failure, 2 usage error, 78 bad configuration.
 */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  let inv: Invocation;
  try {
    const parsed = parse(argv);
    if ("help" in parsed) {
      io.out(`${parsed.help}\n`);
      return EXIT_OK;
    }
    inv = parsed;
  } catch (err) {
    if (err instanceof UsageError) {
      const hint = err.command ? `filerelay ${err.command} --help` : "filerelay --help";
      io.err(`filerelay: ${err.message}\nRun \`${hint}\` for usage.\n`);
      return EXIT_USAGE;
    }
    throw err;
  }

  let nc;
  try {
    const config = await loadCliConfig(
      { server: inv.values.server, stream: inv.values.stream, subject: inv.values.subject },
      io.env,
    );
    // Silent: stdout belongs to the command's output, and a failed connect is thrown and reported.
    nc = await connectNats(config, {
      name: "filerelay-cli",
      log: silentLogger(),
      signal: io.signal,
      maxInitialAttempts: 1,
    });
    const ctx: CommandContext = {
      config,
      names: jetstreamNames(config),
      nc,
      js: jetstream(nc, { timeout: 10_000 }),
      jsm: await jetstreamManager(nc, { timeout: 10_000 }),
      json: inv.values.json === true,
      out: io.out,
      err: io.err,
      signal: io.signal,
    };
    await dispatch(ctx, inv);
    return EXIT_OK;
  } catch (err) {
    if (err instanceof ConfigError) {
      io.err(`filerelay: ${err.message}\n`);
      return EXIT_CONFIG;
    }
    if (err instanceof UsageError) {
      io.err(`filerelay: ${err.message}\nRun \`filerelay ${err.command ?? ""} --help\` for usage.\n`);
      return EXIT_USAGE;
    }
    const code = isFilerelayError(err) && !(err instanceof NotFoundError) ? ` [${err.code}]` : "";
    io.err(`filerelay: error${code}: ${describeError(err)}\n`);
    return EXIT_FAILURE;
  } finally {
    await nc?.close().catch(() => undefined);
  }
}

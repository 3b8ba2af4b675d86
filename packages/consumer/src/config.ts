import { constants } from "node:fs";
import { access, stat } from "node:fs/promises";
import { basename, resolve } from "node:path";
import { z } from "zod";
import {
  commonEnvShape,
  deepFreeze,
  envBool,
  envBytes,
  envInt,
  envList,
  envString,
  loadConfig,
  writableDirectoryProblem,
  type Env,
  type LoadConfigOptions,
} from "@filerelay/core/internal";

/**
 * Consumer configuration (DESIGN §4, consumer variables). Defaults live here;
 * descriptions feed the README reference table.
 */
export const consumerEnvSchema = z.object({
  ...commonEnvShape({ httpPort: 9464 }),
  INPUT_DIR: envString("Directory whose files are published (required)"),
  SOURCE: z
    .string()
    .min(1, "must not be empty")
    .max(255, "must be at most 255 characters")
    // eslint-disable-next-line no-control-regex -- rejecting control characters is the point
    .regex(/^[^\u0000-\u001f\u007f]+$/, "must not contain control characters")
    .describe("Source name sent as ce-source (default: the base name of INPUT_DIR)")
    .optional(),
  FILE_PATTERN: envString(
    "Glob of files to publish, relative to INPUT_DIR; a pattern without '/' matches at any depth",
  ).default("**/*"),
  EXCLUDE_PATTERNS: envList(
    "Comma-separated globs to skip (a pattern without '/' matches at any depth); dotfiles and *.tmp *.part *.partial *.crdownload *.swp are always skipped",
  ).default([]),
  POLL_INTERVAL_MS: envInt(
    "Shortest interval between full directory scans (polls). Adaptive: the next poll starts no sooner than max(POLL_INTERVAL_MS, 100 × the CPU time of the last poll; at most 10 min), so polling a large INPUT_DIR takes at most ~1 % of a CPU; file-system events still trigger immediate checks of the changed paths (new files are seen after ≈ STABILITY_MS)",
    {
      min: 10,
    },
  ).default(5000),
  STABILITY_MS: envInt(
    "A file is ready once its size and mtime have not changed for this long. A heuristic: a writer that pauses longer gets a partial file published, unless this host shows it still holding the file open for writing (checked in /proc for files seen growing; not for writers in other containers or on other hosts of a shared volume). Writers that can should rename a finished file into place, or use READY_MARKER_SUFFIX",
  ).default(2000),
  READY_MARKER_SUFFIX: envString(
    "If set (e.g. .done), a file is ready only once <file><suffix> exists (no stability wait); the marker is disposed of with the file",
  ).optional(),
  ARCHIVE_DIR: envString(
    "After the PubAck, move files to ARCHIVE_DIR/YYYY-MM-DD/<relative path> (unset: leave them in place)",
  ).optional(),
  ERROR_DIR: envString(
    "Files that finally fail go to ERROR_DIR/YYYY-MM-DD/<relative path> with a .error.json (unset: they stay and are logged)",
  ).optional(),
  DELETE_AFTER_PROCESSING: envBool("Delete files after the PubAck (takes precedence over ARCHIVE_DIR)").default(false),
  MAX_RETRIES: envInt("Retries of a failing file before it goes to ERROR_DIR", { max: 100 }).default(4),
  RETRY_BACKOFF_MS: envInt("First retry delay; doubles on every retry (1 s, 2 s, 4 s, 8 s by default)").default(1000),
  MAX_FILE_SIZE: envBytes("Largest file accepted (e.g. 10GiB); larger ones go straight to ERROR_DIR").optional(),
  CONCURRENCY: envInt(
    "Files read and published at once (a published file's archiving and fingerprint record then run without a slot, up to 4 × CONCURRENCY files)",
    { min: 1, max: 1024 },
  ).default(32),
  LARGE_FILE_CONCURRENCY: envInt(
    "Of those, files larger than INLINE_MAX_BYTES uploaded to the Object Store at once: bounds the memory of uploads (up to ~5 MiB each)",
    { min: 1, max: 1024 },
  ).default(4),
  DISCOVERY_WINDOW: envInt(
    "Files in progress at once (found, waiting until complete, queued, being published): discovery of a huge backlog pauses while this many are pending and goes on as they finish, so memory is bounded by this, not by the backlog. Files announced by file-system events get a quarter more room, and workers favour them, so a new file is not stuck behind a backlog",
    { min: 1, max: 1_000_000 },
  ).default(8192),
  FOLLOW_SYMLINKS: envBool(
    "Publish symlinked files (links resolving outside INPUT_DIR are refused; symlinked directories are never entered)",
  ).default(false),
  INLINE_MAX_BYTES: envBytes("Files up to this size travel in the message body; larger ones via the Object Store", {
    max: 64 * 1024 * 1024,
  }).default(262_144),
  PAYLOAD_CHUNK_BYTES: envBytes("Chunk size of payloads uploaded to the Object Store", {
    min: 1024,
    max: 8 * 1024 * 1024,
  }).default(1_048_576),
  SINK_GROUPS: envList(
    "Durable sink groups to provision, so nothing published before they start is lost (comma-separated)",
  ).default(["file-producers"]),
  CLAIM_TTL_MS: envInt(
    "How long a publish claim of a crashed replica blocks others (claims bucket max age, applied when the bucket is created)",
    { min: 1000 },
  ).default(120_000),
  FINGERPRINT_TTL_MS: envInt(
    "How long the record of a published file version is kept (fingerprint bucket max age, applied at start). Deleted or archived files need it only until they are disposed of; files left in place keep theirs refreshed while they stay, but a consumer stopped for longer than this publishes them again",
    { min: 1000 },
  ).default(7 * 24 * 3_600_000),
  ARCHIVE_RETENTION_DAYS: envInt(
    "Remove ARCHIVE_DIR/YYYY-MM-DD folders older than this many days (UTC; today and that many days before it are kept; checked at start and hourly); unset = keep forever",
    { min: 1, max: 36_500 },
  ).optional(),
  ERROR_RETENTION_DAYS: envInt(
    "Remove ERROR_DIR/YYYY-MM-DD folders older than this many days (UTC; today and that many days before it are kept; checked at start and hourly); unset = keep forever",
    { min: 1, max: 36_500 },
  ).optional(),
});

type ParsedConsumerEnv = z.output<typeof consumerEnvSchema>;

/** The validated, frozen consumer configuration (SOURCE defaulted). */
export type ConsumerConfig = Readonly<Omit<ParsedConsumerEnv, "SOURCE"> & { SOURCE: string }>;

/** Problems with the directories that zod cannot see (existence, permissions). */
export async function checkConsumerDirectories(config: ParsedConsumerEnv): Promise<string[]> {
  const problems: string[] = [];
  const input = resolve(config.INPUT_DIR);
  try {
    const st = await stat(input);
    if (!st.isDirectory()) problems.push(`INPUT_DIR: ${input} is not a directory`);
    else await access(input, constants.R_OK | constants.X_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "error";
    problems.push(
      code === "ENOENT" ? `INPUT_DIR: ${input} does not exist` : `INPUT_DIR: ${input} is not readable (${code})`,
    );
  }
  for (const name of ["ARCHIVE_DIR", "ERROR_DIR"] as const) {
    const value = config[name];
    if (value === undefined) continue;
    const dir = resolve(value);
    if (dir === input) {
      problems.push(`${name}: must differ from INPUT_DIR`);
      continue;
    }
    // Created now if missing: a path that can never be a directory (under a file, under /proc) is refused at start.
    const problem = await writableDirectoryProblem(dir, { create: true });
    if (problem !== undefined) problems.push(`${name}: ${problem}`);
  }
  if (config.READY_MARKER_SUFFIX !== undefined && /[/\\]/.test(config.READY_MARKER_SUFFIX)) {
    problems.push("READY_MARKER_SUFFIX: must not contain a path separator");
  }
  return problems;
}

/** Reads, validates and freezes the consumer configuration; throws ConfigError listing every problem. */
export async function loadConsumerConfig(
  env: Env = process.env,
  options: Omit<LoadConfigOptions<ParsedConsumerEnv>, "check"> = {},
): Promise<ConsumerConfig> {
  const parsed = await loadConfig(consumerEnvSchema, env, { ...options, check: checkConsumerDirectories });
  const source = parsed.SOURCE ?? (basename(resolve(parsed.INPUT_DIR)) || "input");
  return deepFreeze({ ...parsed, SOURCE: source });
}

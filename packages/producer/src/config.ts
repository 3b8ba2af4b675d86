import { z } from "zod";
import {
  commonEnvShape,
  envBool,
  envBytes,
  envEnum,
  envFileMode,
  envInt,
  envList,
  envName,
  envString,
  loadConfig,
  type Env,
  type LoadConfigOptions,
} from "@filerelay/core";
import { templateProblems } from "./template.js";

export const SINKS = ["fs", "s3"] as const;
export const ORGANIZE_STRATEGIES = ["date", "type", "source", "none"] as const;
export const CONFLICT_MODES = ["rename", "overwrite", "skip", "fail"] as const;
export const S3_CHECKSUMS = ["none", "sha256"] as const;
export const S3_CHECKSUM_MODES = ["when_supported", "when_required"] as const;

export type SinkKind = (typeof SINKS)[number];
export type OrganizeBy = (typeof ORGANIZE_STRATEGIES)[number];
export type ConflictMode = (typeof CONFLICT_MODES)[number];

export const DEFAULT_FILENAME_TEMPLATE = "{{.Name}}-{{.ShortID}}{{.Ext}}";

/** envEnum narrowed to its literal union (envEnum itself yields `string`). */
function envChoice<const T extends readonly [string, ...string[]]>(values: T, description: string) {
  return envEnum(values, description).pipe(z.enum(values));
}

/** A positive decimal number such as 2 or 1.5. */
function envFactor(description: string) {
  return z
    .string()
    .transform((raw, ctx) => {
      const v = raw.trim();
      const n = Number(v);
      if (!/^\d+(\.\d+)?$/.test(v) || !Number.isFinite(n)) {
        ctx.addIssue({
          code: "custom",
          message: `expected a non-negative number such as 2 or 1.5, got ${JSON.stringify(raw)}`,
        });
        return z.NEVER;
      }
      return n;
    })
    .describe(description);
}

const MiB = 1024 ** 2;

export const producerEnvShape = {
  ...commonEnvShape({ httpPort: 9465 }),
  SINK: envChoice(SINKS, "Where files are written: fs (OUTPUT_DIR) or s3 (S3_BUCKET)").default("fs"),
  PRODUCER_GROUP: envName(
    "Durable JetStream consumer shared by every producer of this group (each file goes to one member)",
  ).default("file-producers"),
  OUTPUT_DIR: envString("Root of the output tree (required when SINK=fs)").optional(),
  ORGANIZE_BY: envChoice(
    ORGANIZE_STRATEGIES,
    "Output layout: date (YYYY/MM/DD, UTC at write time), type (extension), source, or none",
  ).default("date"),
  FILENAME_TEMPLATE: envString(
    "Output file name; placeholders {{.ID}} {{.ShortID}} {{.Name}} {{.Ext}} {{.Source}} {{.Type}} {{.Date}} {{.Year}} {{.Month}} {{.Day}} {{.RelDir}}",
  ).default(DEFAULT_FILENAME_TEMPLATE),
  ON_CONFLICT: envChoice(
    CONFLICT_MODES,
    "When the target exists with other content: rename (-1, -2 … before the extension), overwrite (atomic), skip, or fail (dead-letter)",
  ).default("rename"),
  CHUNK_SIZE: envBytes("Size of each write to the output file", { min: 1024, max: 64 * MiB }).default(65_536),
  FSYNC_EVERY_CHUNKS: envInt("fsync the temp file every N chunks (and always at the end); 0 = only at the end").default(
    10,
  ),
  DIRECT_IO_MIN_BYTES: envBytes(
    "fs sink: files at least this large are written with O_DIRECT, past the page cache (1 MiB writes, one fsync at the end; CHUNK_SIZE and FSYNC_EVERY_CHUNKS apply below it). A file system that refuses O_DIRECT is written the ordinary way; 0 = never",
  ).default(8 * MiB),
  FILE_MODE: envFileMode("Permission bits of written files (octal)").default(0o640),
  MAX_FILE_SIZE: envBytes(
    "Largest accepted ce-filesize (unset = no limit); larger envelopes are dead-lettered",
  ).optional(),
  ALLOWED_CONTENT_TYPES: envList(
    "Comma-separated content types accepted (e.g. text/csv,image/*); unset = all; others are dead-lettered",
  ).optional(),
  DISK_SPACE_FACTOR: envFactor(
    "Free space required on OUTPUT_DIR's filesystem before a write, as a multiple of the file size (0 disables)",
  ).default(2),
  CONCURRENCY: envInt(
    "Envelopes handled at once by this process (many small files share the cost of each wake-up, pull and directory fsync)",
    { min: 1, max: 256 },
  ).default(32),
  LARGE_FILE_CONCURRENCY: envInt(
    "Of those, files sent through the Object Store (larger than the consumer's INLINE_MAX_BYTES) handled at once: bounds the memory of payload streams (up to ~10 MiB each)",
    { min: 1, max: 256 },
  ).default(4),
  MAX_DELIVER: envInt("Attempts per envelope before it is dead-lettered", { min: 1, max: 1000 }).default(5),
  RETRY_BACKOFF_MS: envInt("Base redelivery delay after a transient failure: RETRY_BACKOFF_MS × 2^(attempt-1)", {
    max: 3_600_000,
  }).default(1000),
  ACK_WAIT_MS: envInt(
    "How long a delivered envelope may stay unacknowledged (without progress) before redelivery. The group's durable holds one value for every member: a starting member raises it, lowers it only while the group is idle, and every member paces its keep-alive from the durable's value (a mismatch is logged)",
    {
      min: 1000,
      max: 86_400_000,
    },
  ).default(30_000),
  ERROR_DIR: envString("Where dead-lettered envelopes are also written as YYYY-MM-DD/<id>.envelope.json").optional(),
  S3_BUCKET: envString("S3 bucket (required when SINK=s3)").optional(),
  S3_PREFIX: envString("Key prefix inside S3_BUCKET").optional(),
  S3_ALLOWED_BUCKETS: envList(
    "Buckets an envelope's ce-destination (e.g. an upload job's destination_bucket) may send a file to instead of S3_BUCKET (comma-separated); unset = ce-destination is ignored",
  ).optional(),
  S3_ENDPOINT: envString("S3-compatible endpoint URL (MinIO, R2, …); unset = AWS").optional(),
  S3_REGION: envString("S3 region").default("us-east-1"),
  S3_FORCE_PATH_STYLE: envBool("Path-style bucket addressing (MinIO, s3rver)").default(false),
  S3_PART_SIZE: envBytes("Multipart upload part size (bounds memory with S3_QUEUE_SIZE)", {
    min: 5 * MiB,
    max: 5 * 1024 * MiB,
  }).default(8 * MiB),
  S3_QUEUE_SIZE: envInt("Parts uploaded concurrently per file", { min: 1, max: 64 }).default(4),
  S3_CHECKSUM: envChoice(S3_CHECKSUMS, "S3 additional checksum sent with uploads: none or sha256").default("none"),
  S3_CHECKSUM_MODE: envChoice(
    S3_CHECKSUM_MODES,
    "AWS SDK flexible checksums: when_supported or when_required (default when_required if S3_ENDPOINT is set, else when_supported)",
  ).optional(),
  ERROR_RETENTION_DAYS: envInt(
    "Remove ERROR_DIR/YYYY-MM-DD folders older than this many days (UTC; today and that many days before it are kept; checked at start and hourly); unset = keep forever",
    { min: 1, max: 36_500 },
  ).optional(),
} as const;

/**
 * Cross-field rules. `when: () => true` makes them run even when a field failed,
 * so every problem is reported at once; hence the defensive reads.
 */
export const producerEnvSchema = z.object(producerEnvShape).superRefine(
  (raw, ctx) => {
    const cfg = raw as Partial<Record<string, unknown>>;
    const sink = cfg.SINK ?? "fs";
    if (sink === "fs" && cfg.OUTPUT_DIR === undefined) {
      ctx.addIssue({ code: "custom", path: ["OUTPUT_DIR"], message: "required when SINK=fs" });
    }
    if (sink === "s3" && cfg.S3_BUCKET === undefined) {
      ctx.addIssue({ code: "custom", path: ["S3_BUCKET"], message: "required when SINK=s3" });
    }
    if (typeof cfg.FILENAME_TEMPLATE === "string") {
      for (const message of templateProblems(cfg.FILENAME_TEMPLATE)) {
        ctx.addIssue({ code: "custom", path: ["FILENAME_TEMPLATE"], message });
      }
    }
  },
  { when: () => true },
);

type ParsedEnv = z.output<typeof producerEnvSchema>;

/** The producer's frozen configuration (S3_CHECKSUM_MODE resolved). */
export type ProducerConfig = Readonly<
  Omit<ParsedEnv, "S3_CHECKSUM_MODE"> & { S3_CHECKSUM_MODE: (typeof S3_CHECKSUM_MODES)[number] }
>;

/**
 * Reads and validates the producer's environment (+ `.env`), reporting every
 * problem at once as a ConfigError (exit 78 under runService).
 */
export async function loadProducerConfig(
  env: Env = process.env,
  options: LoadConfigOptions<ParsedEnv> = {},
): Promise<ProducerConfig> {
  const parsed = await loadConfig(producerEnvSchema, env, options);
  const mode = parsed.S3_CHECKSUM_MODE ?? (parsed.S3_ENDPOINT ? "when_required" : "when_supported");
  return Object.freeze({ ...parsed, S3_CHECKSUM_MODE: mode });
}

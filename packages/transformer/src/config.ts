import { z } from "zod";
import {
  commonEnvShape,
  envBool,
  envBytes,
  envEnum,
  envInt,
  envList,
  envName,
  envString,
  envSubject,
  loadConfig,
  type Env,
  type LoadConfigOptions,
} from "@filerelay/core";

/** The steps this build has, in the order an operator usually wants them. */
export const STEP_NAMES = ["unpack", "convert"] as const;
export type StepName = (typeof STEP_NAMES)[number];
export const PARQUET_CODECS = ["zstd", "snappy", "gzip", "none"] as const;
export type ParquetCodec = (typeof PARQUET_CODECS)[number];

const MiB = 1024 ** 2;
const GiB = 1024 * MiB;

/** envEnum narrowed to its literal union (envEnum itself yields `string`). */
function envChoice<const T extends readonly [string, ...string[]]>(values: T, description: string) {
  return envEnum(values, description).pipe(z.enum(values));
}

/** A comma list of step names, each known, none twice. */
function envSteps(description: string) {
  return envList(description)
    .transform((steps, ctx) => {
      const out: StepName[] = [];
      for (const raw of steps) {
        const step = raw.toLowerCase();
        if (!(STEP_NAMES as readonly string[]).includes(step)) {
          ctx.addIssue({
            code: "custom",
            message: `unknown step ${JSON.stringify(raw)} (known: ${STEP_NAMES.join(", ")})`,
          });
        } else if (out.includes(step as StepName)) {
          ctx.addIssue({ code: "custom", message: `step ${step} is listed twice` });
        } else out.push(step as StepName);
      }
      return out;
    })
    .describe(description);
}

export const transformerEnvShape = {
  ...commonEnvShape({ httpPort: 9466 }),
  TRANSFORM_GROUP: envName(
    "Durable JetStream consumer shared by every transformer of this group, reading SUBJECT",
  ).default("transformers"),
  OUTPUT_SUBJECT: envSubject(
    "Subject the transformer publishes its results to (sinks that should receive them set SUBJECT to it)",
  ).default("files.processed"),
  SINK_GROUPS: envList(
    "Groups reading OUTPUT_SUBJECT, provisioned on it at start so nothing published before they start is lost",
  ).default(["file-producers"]),
  TRANSFORMS: envSteps(
    "Ordered comma list of steps: unpack (zip, tar, tar.gz/tgz, gz), convert (CSV, TSV, JSON Lines, JSON → Parquet); a file no step changes passes on as it is",
  ).default(["unpack", "convert"]),
  KEEP_ORIGINAL: envBool(
    "Also pass on a file a step transformed (the archive beside its entries, the CSV beside its Parquet)",
  ).default(true),
  EXTRACT_MAX_BYTES: envBytes(
    "Most bytes one archive may expand to, nested archives included; more is dead-lettered as ARCHIVE_TOO_LARGE",
    { min: 1 },
  ).default(10 * GiB),
  EXTRACT_MAX_FILES: envInt("Most entries one archive may hold, nested archives included (ARCHIVE_TOO_LARGE)", {
    min: 1,
    max: 10_000_000,
  }).default(100_000),
  EXTRACT_MAX_DEPTH: envInt(
    "How deep archives inside archives are unpacked (1 = only the file itself); deeper ones pass on unopened",
    { min: 1, max: 16 },
  ).default(3),
  EXTRACT_MAX_RATIO: envInt(
    "Most bytes an archive may expand to per byte of itself, once it expanded past 1 MiB (zip bombs; ARCHIVE_TOO_LARGE)",
    { min: 2, max: 100_000 },
  ).default(200),
  CONVERT_PATTERNS: envList(
    "Comma list of file-name globs the convert step takes (matched against the base name, case-insensitive)",
  ).default(["*.csv", "*.tsv", "*.jsonl", "*.ndjson", "*.json"]),
  PARQUET_COMPRESSION: envChoice(PARQUET_CODECS, "Codec of the Parquet files convert writes").default("zstd"),
  CONVERT_MEMORY_LIMIT: envString(
    "DuckDB's memory_limit during a conversion (e.g. 256MB, 1GB); past it DuckDB spills to TRANSFORM_TMP_DIR",
  ).default("256MB"),
  CONVERT_THREADS: envInt("DuckDB threads per conversion", { min: 1, max: 64 }).default(2),
  TRANSFORM_TMP_DIR: envString(
    "Scratch space for archives (zip needs random access), conversions and DuckDB's spill files (unset = the system temp dir)",
  ).optional(),
  INLINE_MAX_BYTES: envBytes("Largest derived file sent in the message body; larger ones go to the Object Store", {
    max: 1024 * 1024,
  }).default(262_144),
  CONCURRENCY: envInt("Files transformed at once by this process", { min: 1, max: 64 }).default(4),
  LARGE_FILE_CONCURRENCY: envInt("Of those, files read from the Object Store at once", { min: 1, max: 64 }).default(2),
  MAX_DELIVER: envInt("Attempts per envelope before it is dead-lettered", { min: 1, max: 1000 }).default(5),
  RETRY_BACKOFF_MS: envInt("Base redelivery delay after a transient failure: RETRY_BACKOFF_MS × 2^(attempt-1)", {
    max: 3_600_000,
  }).default(1000),
  ACK_WAIT_MS: envInt("How long a delivered envelope may stay unacknowledged (without progress) before redelivery", {
    min: 1000,
    max: 86_400_000,
  }).default(30_000),
  DUPLICATE_WINDOW_MS: envInt(
    "How long JetStream remembers ce-ids to drop a second publish (only ever raised on the stream): a transformer restarted within it after a crash publishes no derived file twice",
    { min: 1000, max: 7 * 86_400_000 },
  ).default(600_000),
  ERROR_DIR: envString("Where dead-lettered envelopes are also written as YYYY-MM-DD/<id>.envelope.json").optional(),
} as const;

export const transformerEnvSchema = z.object(transformerEnvShape).superRefine(
  (raw, ctx) => {
    const cfg = raw as Partial<Record<string, unknown>>;
    if (typeof cfg.OUTPUT_SUBJECT === "string" && cfg.OUTPUT_SUBJECT === (cfg.SUBJECT ?? "files.input")) {
      ctx.addIssue({
        code: "custom",
        path: ["OUTPUT_SUBJECT"],
        message: "must differ from SUBJECT (the stage would read its own output)",
      });
    }
    if (Array.isArray(cfg.SINK_GROUPS) && typeof cfg.TRANSFORM_GROUP === "string") {
      if (cfg.SINK_GROUPS.includes(cfg.TRANSFORM_GROUP)) {
        ctx.addIssue({
          code: "custom",
          path: ["SINK_GROUPS"],
          message: `must not contain TRANSFORM_GROUP ${cfg.TRANSFORM_GROUP} (a group reads one subject)`,
        });
      }
    }
  },
  { when: () => true },
);

type ParsedEnv = z.output<typeof transformerEnvSchema>;
export type TransformerConfig = Readonly<ParsedEnv>;

/** Reads and validates the transformer's environment (+ `.env`); every problem at once (exit 78 under runService). */
export async function loadTransformerConfig(
  env: Env = process.env,
  options: LoadConfigOptions<ParsedEnv> = {},
): Promise<TransformerConfig> {
  return loadConfig(transformerEnvSchema, env, options);
}

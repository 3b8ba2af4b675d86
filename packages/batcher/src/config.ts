import { z } from "zod";
import {
  commonEnvShape,
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

export const BATCH_FORMATS = ["xml", "jsonl", "raw"] as const;
export const BATCH_CONVERSIONS = ["none", "json"] as const;
export type BatchFormat = (typeof BATCH_FORMATS)[number];

const MiB = 1024 ** 2;

/** A subject pattern that may hold wildcards (`events.>`, `events.*.acm`). */
const SUBJECT_PATTERN = /^([^\s.*>]+|\*)(\.([^\s.*>]+|\*))*(\.>)?$|^>$/;

/** envEnum narrowed to its literal union (envEnum itself yields `string`). */
function envChoice<const T extends readonly [string, ...string[]]>(values: T, description: string) {
  return envEnum(values, description).pipe(z.enum(values));
}

export const batcherEnvShape = {
  ...commonEnvShape({ httpPort: 9468 }),
  SOURCE: envName("ce-source of the batch files this batcher publishes").default("batcher"),
  SINK_GROUPS: envList(
    "Durable sink groups to provision on STREAM, so no batch published before they start is lost (comma-separated)",
  ).default(["file-producers"]),
  EVENT_SUBJECTS: envList(
    "Subjects whose messages are events (comma-separated, wildcards allowed); the stream EVENTS_STREAM captures them",
  ).default(["events.>"]),
  EVENTS_STREAM: envName(
    "Stream that keeps events until they are in a published batch (provisioned by the batcher)",
  ).default("EVENTS"),
  BATCH_GROUP: envName(
    "The batcher's durable consumer on EVENTS_STREAM; one replica per group works at a time (it holds the group's lease), others wait not ready and take over its recorded windows",
  ).default("batcher"),
  BATCH_LEASE_MS: envInt(
    "How long the working replica's hold on its BATCH_GROUP lasts unrenewed (renewed every third of it); a waiting replica takes over this long after the holder dies, at once after a clean stop",
    { min: 1000, max: 600_000 },
  ).default(15_000),
  BATCH_FORMAT: envChoice(
    BATCH_FORMATS,
    "xml: declarations stripped, events wrapped in one BATCH_XML_ROOT under one declaration; jsonl: one JSON value per line; raw: event bytes, one event per line",
  ).default("xml"),
  BATCH_CONVERT: envChoice(
    BATCH_CONVERSIONS,
    "json: publish an XML batch as a JSON array, one object per event (BATCH_FORMAT=xml only)",
  ).default("none"),
  BATCH_XML_ROOT: z
    .string()
    .regex(/^[A-Za-z_][A-Za-z0-9_.-]*$/, "expected an XML element name such as EVENTS")
    .describe("Root element wrapping the events of an XML batch")
    .default("EVENTS"),
  BATCH_KEY: envInt(
    "Position of the subject token (1 = first) that splits batches, e.g. 2 for one batch per events.<tenant>.…; unset = one batch per window",
    { min: 1, max: 32 },
  ).optional(),
  ROTATION_INTERVAL_MS: envInt("A batch is closed this long after its window's first event", {
    min: 100,
    max: 86_400_000,
  }).default(60_000),
  MAX_BATCH_BYTES: envBytes(
    "A batch is closed before an event would take it past this many event bytes (a single larger event makes a batch of its own)",
    { min: 1024, max: 64 * 1024 * MiB },
  ).default(5 * MiB),
  ROTATION_CHECK_MS: envInt("How often the window's age is checked against ROTATION_INTERVAL_MS", {
    min: 10,
    max: 3_600_000,
  }).default(10_000),
  EVENTS_ACK_WAIT_MS: envInt(
    "How long an event may stay unacknowledged before JetStream redelivers it (default: ROTATION_INTERVAL_MS + ROTATION_CHECK_MS + 60 s); also how soon events of a crashed batcher come back. Windows held longer are kept alive with in-progress acks",
    { min: 1000, max: 86_400_000 },
  ).optional(),
  EVENTS_MAX_ACK_PENDING: envInt(
    "Most events delivered and not yet acknowledged (the open window plus batches being published); a window with more events than this closes by time with fewer than MAX_BATCH_BYTES",
    { min: 100, max: 10_000_000 },
  ).default(1_000_000),
  BATCH_SPOOL_DIR: envString("Directory holding the open window's events on disk (emptied at start)").default(
    "/tmp/filerelay-batcher",
  ),
  TCP_PORT: envInt("Port of the TCP event listener (unset = no listener)", { max: 65535 }).optional(),
  TCP_HOST: envString("Address the TCP listener binds").default("0.0.0.0"),
  TCP_SUBJECT: envSubject("Subject TCP events are stored under in EVENTS_STREAM (must match EVENT_SUBJECTS)").default(
    "events.tcp",
  ),
  TCP_MAX_EVENT_BYTES: envBytes(
    "Largest event accepted over TCP; a larger one ends the connection with ERR (capped by the server's max_payload)",
    { min: 64, max: 64 * MiB },
  ).default(MiB),
  INLINE_MAX_BYTES: envBytes("Batches up to this size travel in the message body; larger ones via the Object Store", {
    max: 64 * MiB,
  }).default(262_144),
  PAYLOAD_CHUNK_BYTES: envBytes("Chunk size of batches uploaded to the Object Store", {
    min: 1024,
    max: 8 * MiB,
  }).default(1_048_576),
} as const;

/** Does the NATS subject pattern `pattern` match subject `s`? */
export function subjectMatches(pattern: string, s: string): boolean {
  const p = pattern.split(".");
  const t = s.split(".");
  for (let i = 0; i < p.length; i++) {
    if (p[i] === ">") return t.length > i;
    if (i >= t.length) return false;
    if (p[i] !== "*" && p[i] !== t[i]) return false;
  }
  return p.length === t.length;
}

export const batcherEnvSchema = z.object(batcherEnvShape).superRefine(
  (raw, ctx) => {
    const cfg = raw as Partial<Record<string, unknown>>;
    const subjects = Array.isArray(cfg.EVENT_SUBJECTS) ? (cfg.EVENT_SUBJECTS as string[]) : undefined;
    if (subjects) {
      if (subjects.length === 0)
        ctx.addIssue({ code: "custom", path: ["EVENT_SUBJECTS"], message: "must not be empty" });
      for (const s of subjects) {
        if (!SUBJECT_PATTERN.test(s)) {
          ctx.addIssue({
            code: "custom",
            path: ["EVENT_SUBJECTS"],
            message: `not a subject pattern: ${JSON.stringify(s)}`,
          });
        }
      }
      const tcp = cfg.TCP_SUBJECT;
      if (cfg.TCP_PORT !== undefined && typeof tcp === "string" && !subjects.some((p) => subjectMatches(p, tcp))) {
        ctx.addIssue({
          code: "custom",
          path: ["TCP_SUBJECT"],
          message: `${tcp} is not matched by EVENT_SUBJECTS (${subjects.join(", ")})`,
        });
      }
    }
    if (cfg.BATCH_CONVERT === "json" && cfg.BATCH_FORMAT !== undefined && cfg.BATCH_FORMAT !== "xml") {
      ctx.addIssue({ code: "custom", path: ["BATCH_CONVERT"], message: "json needs BATCH_FORMAT=xml" });
    }
    const interval = typeof cfg.ROTATION_INTERVAL_MS === "number" ? cfg.ROTATION_INTERVAL_MS : undefined;
    const check = typeof cfg.ROTATION_CHECK_MS === "number" ? cfg.ROTATION_CHECK_MS : undefined;
    const ackWait = typeof cfg.EVENTS_ACK_WAIT_MS === "number" ? cfg.EVENTS_ACK_WAIT_MS : undefined;
    if (interval !== undefined && check !== undefined && ackWait !== undefined && ackWait <= interval + check) {
      ctx.addIssue({
        code: "custom",
        path: ["EVENTS_ACK_WAIT_MS"],
        message: `must exceed ROTATION_INTERVAL_MS + ROTATION_CHECK_MS (${interval + check} ms), or every window would be redelivered while open`,
      });
    }
  },
  { when: () => true },
);

type ParsedEnv = z.output<typeof batcherEnvSchema>;

/** The batcher's frozen configuration (EVENTS_ACK_WAIT_MS resolved). */
export type BatcherConfig = Readonly<Omit<ParsedEnv, "EVENTS_ACK_WAIT_MS"> & { EVENTS_ACK_WAIT_MS: number }>;

/** The default ack wait: a full window, one check period late, plus a minute to publish it. */
export function defaultAckWaitMs(intervalMs: number, checkMs: number): number {
  return intervalMs + checkMs + 60_000;
}

/**
 * Reads and validates the batcher's environment (+ `.env`), reporting every
 * problem at once as a ConfigError (exit 78 under runService).
 */
export async function loadBatcherConfig(
  env: Env = process.env,
  options: LoadConfigOptions<ParsedEnv> = {},
): Promise<BatcherConfig> {
  const parsed = await loadConfig(batcherEnvSchema, env, options);
  const ackWait = parsed.EVENTS_ACK_WAIT_MS ?? defaultAckWaitMs(parsed.ROTATION_INTERVAL_MS, parsed.ROTATION_CHECK_MS);
  return Object.freeze({ ...parsed, EVENTS_ACK_WAIT_MS: ackWait });
}

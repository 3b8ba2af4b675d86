import { existsSync, readFileSync } from "node:fs";
import { parseEnv } from "node:util";
import { z } from "zod";
import { ConfigError } from "./errors.js";

/**
 * Configuration is read once, from environment variables (plus an optional
 * `.env`), validated with zod, and frozen. Schemas are `z.object`s keyed by the
 * variable names themselves, so a config value, its variable and its entry in
 * the README's reference table share one name. Defaults live in the schema.
 */

export type Env = Record<string, string | undefined>;

/** Variables whose values must never be logged. */
export const SECRET_VARIABLES = new Set(["NATS_TOKEN", "NATS_PASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]);

// ---------------------------------------------------------------------------
// Field builders. Each carries a description (for the reference table) and
// reports problems in the form "expected <form>, got <value>".

const got = (v: unknown): string => (typeof v === "string" ? JSON.stringify(v) : String(v));

export function envString(description: string) {
  return z.string({ error: "required" }).min(1, "must not be empty").describe(description);
}

export function envInt(description: string, opts: { min?: number; max?: number } = {}) {
  const { min = 0, max = Number.MAX_SAFE_INTEGER } = opts;
  return z
    .string()
    .transform((raw, ctx) => {
      const v = raw.trim();
      if (!/^-?\d+$/.test(v)) {
        ctx.addIssue({ code: "custom", message: `expected a whole number, got ${got(raw)}` });
        return z.NEVER;
      }
      const n = Number(v);
      if (n < min || n > max) {
        ctx.addIssue({ code: "custom", message: `expected a number from ${min} to ${max}, got ${v}` });
        return z.NEVER;
      }
      return n;
    })
    .describe(description);
}

const BYTE_UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1e3,
  kb: 1e3,
  kib: 1024,
  m: 1e6,
  mb: 1e6,
  mib: 1024 ** 2,
  g: 1e9,
  gb: 1e9,
  gib: 1024 ** 3,
  t: 1e12,
  tb: 1e12,
  tib: 1024 ** 4,
};

/** Parses "1048576", "64KiB", "10GB" into bytes. */
export function parseBytes(raw: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(raw);
  if (!m) return undefined;
  const unit = BYTE_UNITS[(m[2] ?? "").toLowerCase()];
  if (unit === undefined) return undefined;
  const n = Math.floor(Number(m[1]) * unit);
  return Number.isSafeInteger(n) ? n : undefined;
}

export function envBytes(description: string, opts: { min?: number; max?: number } = {}) {
  const { min = 0, max = Number.MAX_SAFE_INTEGER } = opts;
  return z
    .string()
    .transform((raw, ctx) => {
      const n = parseBytes(raw);
      if (n === undefined) {
        ctx.addIssue({
          code: "custom",
          message: `expected a size in bytes such as 1048576, 64KiB or 10GB, got ${got(raw)}`,
        });
        return z.NEVER;
      }
      if (n < min || n > max) {
        ctx.addIssue({ code: "custom", message: `expected a size from ${min} to ${max} bytes, got ${n}` });
        return z.NEVER;
      }
      return n;
    })
    .describe(description);
}

const DURATION_UNITS: Record<string, number> = {
  "": 1,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

/** Parses "30d", "12h", "90s", "250ms" or plain milliseconds ("60000") into milliseconds. */
export function parseDuration(raw: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(raw);
  if (!m) return undefined;
  const unit = DURATION_UNITS[(m[2] ?? "").toLowerCase()];
  if (unit === undefined) return undefined;
  const n = Math.round(Number(m[1]) * unit);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** A duration in milliseconds, written as 30d, 12h, 15m, 90s, 250ms or plain milliseconds. */
export function envDuration(description: string, opts: { min?: number; max?: number } = {}) {
  const { min = 0, max = Number.MAX_SAFE_INTEGER } = opts;
  return z
    .string()
    .transform((raw, ctx) => {
      const n = parseDuration(raw);
      if (n === undefined) {
        ctx.addIssue({
          code: "custom",
          message: `expected a duration such as 30d, 12h, 15m, 90s or milliseconds, got ${got(raw)}`,
        });
        return z.NEVER;
      }
      if (n < min || n > max) {
        ctx.addIssue({ code: "custom", message: `expected a duration from ${min} to ${max} ms, got ${n}` });
        return z.NEVER;
      }
      return n;
    })
    .describe(description);
}

export function envBool(description: string) {
  return z
    .string()
    .transform((raw, ctx) => {
      const v = raw.trim().toLowerCase();
      if (["true", "1", "yes", "on"].includes(v)) return true;
      if (["false", "0", "no", "off"].includes(v)) return false;
      ctx.addIssue({
        code: "custom",
        message: `expected true or false (also 1/0, yes/no, on/off), got ${got(raw)}`,
      });
      return z.NEVER;
    })
    .describe(description);
}

/** Comma-separated list; blanks dropped. */
export function envList(description: string) {
  return z
    .string()
    .transform((raw) =>
      raw
        .split(",")
        .map((s) => s.trim())
        .filter((s) => s.length > 0),
    )
    .describe(description);
}

export function envEnum<const T extends readonly [string, ...string[]]>(values: T, description: string) {
  return z
    .string()
    .transform((raw, ctx) => {
      const v = raw.trim().toLowerCase();
      if ((values as readonly string[]).includes(v)) return v;
      ctx.addIssue({ code: "custom", message: `expected one of ${values.join(" | ")}, got ${got(raw)}` });
      return z.NEVER;
    })
    .describe(description);
}

/** Unix permission bits written in octal, e.g. 0640. */
export function envFileMode(description: string) {
  return z
    .string()
    .transform((raw, ctx) => {
      const v = raw.trim();
      if (!/^0?[0-7]{3,4}$/.test(v)) {
        ctx.addIssue({ code: "custom", message: `expected octal permission bits such as 0640, got ${got(raw)}` });
        return z.NEVER;
      }
      return parseInt(v, 8);
    })
    .describe(description);
}

/** A NATS subject token/name usable in stream, consumer and bucket names. */
export function envName(description: string) {
  return z
    .string()
    .regex(/^[A-Za-z0-9_-]+$/, "expected letters, digits, '_' or '-' only")
    .describe(description);
}

export function envSubject(description: string) {
  return z
    .string()
    .regex(
      /^[^\s.*>]+(\.[^\s.*>]+)*$/,
      "expected a NATS subject without wildcards, made of '.'-separated tokens, such as files.input",
    )
    .describe(description);
}

/** Schemes the Node NATS client speaks (it has no WebSocket transport). */
const NATS_URL_SCHEMES = ["nats", "tls"];

/**
 * Why one NATS_URL entry cannot be connected to, or undefined when it can:
 * `[nats|tls://][user[:password]@]host[:port]`, as the NATS client reads it.
 * Checked at start-up: the client would otherwise retry a typo forever.
 */
export function natsUrlProblem(entry: string): string | undefined {
  const shown = JSON.stringify(redactUrl(entry));
  const m = /^(?:([A-Za-z][A-Za-z0-9+.-]*):\/\/)?(?:[^@/\s]*@)?(\[[0-9A-Fa-f:.]+\]|[^:/\s[\]@]+)(?::([^/]*))?\/?$/.exec(
    entry,
  );
  if (!m) return `expected a URL such as nats://host:4222, got ${shown}`;
  const [, scheme, host = "", port] = m;
  if (scheme !== undefined && !NATS_URL_SCHEMES.includes(scheme.toLowerCase())) {
    const hint = /^wss?$/i.test(scheme) ? " (WebSocket is not supported by the services; use the NATS port)" : "";
    return `expected scheme nats:// or tls://, got ${JSON.stringify(scheme)} in ${shown}${hint}`;
  }
  if (
    !host.startsWith("[") &&
    !/^[A-Za-z0-9]([A-Za-z0-9_-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9_-]*[A-Za-z0-9])?)*\.?$/.test(host)
  ) {
    return `expected a host name or IP address, got ${JSON.stringify(host)} in ${shown}`;
  }
  if (port !== undefined && !(/^\d{1,5}$/.test(port) && Number(port) >= 1 && Number(port) <= 65535)) {
    return `expected a port from 1 to 65535, got ${JSON.stringify(port)} in ${shown}`;
  }
  return undefined;
}

/** Comma-separated NATS server URLs, each checked by natsUrlProblem(). */
export function envNatsUrls(description: string) {
  return envList(description)
    .superRefine((urls, ctx) => {
      if (urls.length === 0) ctx.addIssue({ code: "custom", message: "expected at least one URL" });
      for (const url of urls) {
        const problem = natsUrlProblem(url);
        if (problem) ctx.addIssue({ code: "custom", message: problem });
      }
    })
    .describe(description);
}

// ---------------------------------------------------------------------------
// Common variables (DESIGN §4).

/** Dead letters are kept this long unless DLQ_MAX_AGE says otherwise. */
export const DEFAULT_DLQ_MAX_AGE_MS = 30 * 86_400_000;
/** Status ledger records are kept this long unless STATUS_MAX_AGE says otherwise. */
export const DEFAULT_STATUS_MAX_AGE_MS = 7 * 86_400_000;

export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;

export function commonEnvShape(service: { httpPort: number }) {
  return {
    NATS_URL: envNatsUrls("NATS server URL(s), comma-separated: nats://host:port or tls://host:port").default([
      "nats://127.0.0.1:4222",
    ]),
    NATS_CREDS: envString("Path to a NATS .creds file (JWT + nkey seed)").optional(),
    NATS_TOKEN: envString("NATS authentication token (secret)").optional(),
    NATS_USER: envString("NATS user name").optional(),
    NATS_PASSWORD: envString("NATS password (secret)").optional(),
    NATS_NKEY_SEED_FILE: envString("Path to a file holding an NKEY user seed").optional(),
    NATS_TLS_CA: envString("PEM file of the CA that signed the NATS server certificate").optional(),
    NATS_TLS_CERT: envString("PEM client certificate for mutual TLS").optional(),
    NATS_TLS_KEY: envString("PEM private key of NATS_TLS_CERT").optional(),
    STREAM: envName("JetStream stream that captures envelopes").default("FILES"),
    SUBJECT: envSubject("Subject envelopes are published to / consumed from").default("files.input"),
    STREAM_REPLICAS: envInt("Replicas of the streams and buckets this service provisions", {
      min: 1,
      max: 5,
    }).default(1),
    LOG_LEVEL: envEnum(LOG_LEVELS, "Log level").default("info"),
    LOG_PRETTY: envBool("Human-readable logs instead of JSON lines").default(false),
    HTTP_PORT: envInt("Port for /healthz, /readyz and /metrics (0 disables)", { max: 65535 }).default(service.httpPort),
    SHUTDOWN_TIMEOUT_MS: envInt("How long SIGTERM waits for in-flight files before giving up").default(30_000),
    PAYLOAD_SWEEP_INTERVAL_MS: envInt(
      "How often the payload sweep runs (one replica per interval, under a lease; 0 = never in this process). It removes objects no envelope references, e.g. after a crash between upload and publish",
    ).default(300_000),
    PAYLOAD_ORPHAN_GRACE_MS: envInt(
      "Age before the payload sweep removes an object no envelope references, or the chunks of an upload that never finished (covers upload-to-publish and uploads in progress)",
      { min: 1000 },
    ).default(900_000),
    DLQ_MAX_AGE: envDuration(
      "How long dead letters are kept in the dead-letter stream (FILES_DLQ), e.g. 30d or 12h; applied at every start, also to an existing stream",
      { min: 1000 },
    ).default(DEFAULT_DLQ_MAX_AGE_MS),
    STATUS: envBool(
      "Record each file's progress in the status ledger (stream <STREAM>_STATUS) for `filerelay files` and the gateway's status API; off disables it",
    ).default(true),
    STATUS_MAX_AGE: envDuration("How long status ledger records are kept, e.g. 7d or 12h", { min: 60_000 }).default(
      DEFAULT_STATUS_MAX_AGE_MS,
    ),
    DLQ_MAX_BYTES: envBytes(
      "Most bytes the dead-letter stream holds, e.g. 10GiB; the oldest dead letters go first (unset = no byte limit)",
      { min: 1024 },
    ).optional(),
  };
}

// ---------------------------------------------------------------------------

export interface LoadConfigOptions<T> {
  /** `.env` file merged under the environment; `null` disables. Default: `.env` when env is process.env. */
  envFile?: string | null;
  /** Further checks on the parsed object (e.g. directory readable); each string is one problem. */
  check?: (config: T) => string[] | Promise<string[]>;
}

/**
 * Validates `env` against `schema`, reporting every problem at once (each naming
 * its variable) as a ConfigError, and returns a deeply frozen typed object.
 */
export async function loadConfig<S extends z.ZodType<Record<string, unknown>, Record<string, unknown>>>(
  schema: S,
  env: Env = process.env,
  options: LoadConfigOptions<z.output<S>> = {},
): Promise<Readonly<z.output<S>>> {
  const envFile = options.envFile === undefined ? (env === process.env ? ".env" : null) : options.envFile;
  let merged: Env = env;
  if (envFile && existsSync(envFile)) {
    // Real environment wins over the file, as with process.loadEnvFile.
    merged = { ...parseEnv(readFileSync(envFile, "utf8")), ...env };
  }
  // An empty variable (`FOO=` in compose files) means "unset": use the default.
  const cleaned: Record<string, string> = {};
  for (const [k, v] of Object.entries(merged)) if (v !== undefined && v !== "") cleaned[k] = v;

  const result = await schema.safeParseAsync(cleaned);
  if (!result.success) {
    const problems = result.error.issues.map((issue) => {
      const name = issue.path.length > 0 ? issue.path.join(".") : "(configuration)";
      const message =
        issue.code === "invalid_type" && cleaned[String(issue.path[0])] === undefined ? "required" : issue.message;
      return `${name}: ${message}`;
    });
    throw new ConfigError(problems);
  }
  const config = result.data;
  const extra = options.check ? await options.check(config) : [];
  if (extra.length > 0) throw new ConfigError(extra);
  return deepFreeze(config);
}

export function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/** A copy safe to log: secrets replaced by "[redacted]", credentials in URLs stripped. */
export function redactConfig(config: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(config)) {
    if (SECRET_VARIABLES.has(k) && v !== undefined) out[k] = "[redacted]";
    else if (k === "NATS_URL" && Array.isArray(v)) out[k] = v.map((u) => redactUrl(String(u)));
    // Permission bits read as octal, as they were written (0640, not 416).
    else if (k.endsWith("_MODE") && typeof v === "number") out[k] = `0${v.toString(8).padStart(3, "0")}`;
    else out[k] = v;
  }
  return out;
}

export function redactUrl(url: string): string {
  return url.replace(/\/\/([^@/]*)@/, "//[redacted]@");
}

import { z } from "zod";
import {
  commonEnvShape,
  envBytes,
  envDuration,
  envInt,
  envList,
  envString,
  loadConfig,
  type Env,
  type LoadConfigOptions,
} from "@filerelay/core";

const MiB = 1024 ** 2;

export const gatewayEnvShape = {
  ...commonEnvShape({ httpPort: 8080 }),
  HTTP_HOST: envString("Address the HTTP API listens on").default("0.0.0.0"),
  HTTP_TLS_CERT: envString("PEM certificate: serve HTTPS instead of HTTP (with HTTP_TLS_KEY)").optional(),
  HTTP_TLS_KEY: envString("PEM private key of HTTP_TLS_CERT").optional(),
  GATEWAY_API_KEYS_FILE: envString(
    'JSON array of API keys: [{"name","role": upload|read|admin,"sha256": hex SHA-256 of the key,"source"?}]; keys are never stored in clear',
  ),
  GATEWAY_UPLOAD_DIR: envString(
    "Where partial uploads (chunked and tus) are kept until complete, so they survive a restart",
  ),
  GATEWAY_JOB_ROOTS: envList(
    "Server-side folders (comma-separated) under which upload jobs may read; unset = upload jobs refused",
  ).optional(),
  MAX_UPLOAD_SIZE: envBytes("Largest file accepted by any upload API, e.g. 10GiB (413 beyond)").default(10 * 1024 ** 3),
  ALLOWED_CONTENT_TYPES: envList(
    "Comma-separated content types accepted for upload (e.g. text/csv,image/*); unset = all; others get 415",
  ).optional(),
  RATE_LIMIT_PER_MINUTE: envInt("Requests per minute per API key (per client address without one); 0 = no limit", {
    max: 1_000_000,
  }).default(600),
  UPLOAD_EXPIRY: envDuration("Abandoned partial uploads (chunked and tus) are removed after this long, e.g. 24h", {
    min: 1000,
  }).default(86_400_000),
  UPLOAD_CHUNK_MAX: envBytes("Largest chunk accepted by the chunked upload API", {
    min: 1024,
    max: 1024 * MiB,
  }).default(64 * MiB),
  JOB_CONCURRENCY: envInt("Files an upload job publishes at once", { min: 1, max: 256 }).default(8),
  INLINE_MAX_BYTES: envBytes("Files up to this size travel in the message body; larger ones via the Object Store", {
    max: 64 * MiB,
  }).default(262_144),
  PAYLOAD_CHUNK_BYTES: envBytes("Chunk size of payloads uploaded to the Object Store", {
    min: 1024,
    max: 8 * MiB,
  }).default(1_048_576),
  SINK_GROUPS: envList(
    "Durable sink groups to provision, so nothing published before they start is lost (comma-separated)",
  ).default(["file-producers"]),
} as const;

export const gatewayEnvSchema = z.object(gatewayEnvShape).superRefine(
  (raw, ctx) => {
    const cfg = raw as Partial<Record<string, unknown>>;
    if ((cfg.HTTP_TLS_CERT === undefined) !== (cfg.HTTP_TLS_KEY === undefined)) {
      const missing = cfg.HTTP_TLS_CERT === undefined ? "HTTP_TLS_CERT" : "HTTP_TLS_KEY";
      ctx.addIssue({ code: "custom", path: [missing], message: "HTTP_TLS_CERT and HTTP_TLS_KEY go together" });
    }
  },
  { when: () => true },
);

export type GatewayConfig = Readonly<z.output<typeof gatewayEnvSchema>>;

/** Reads and validates the gateway's environment (+ `.env`); every problem at once, as a ConfigError (exit 78). */
export async function loadGatewayConfig(
  env: Env = process.env,
  options: LoadConfigOptions<z.output<typeof gatewayEnvSchema>> = {},
): Promise<GatewayConfig> {
  return loadConfig(gatewayEnvSchema, env, options);
}

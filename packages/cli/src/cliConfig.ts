import { z } from "zod";
import { commonEnvShape, ConfigError, envBytes, loadConfig, type Env } from "@filerelay/core";

/**
 * The CLI reads the services' common NATS_* / STREAM / SUBJECT variables (and
 * `.env`), so it talks to the same deployment as the services started in the
 * same environment. INLINE_MAX_BYTES and PAYLOAD_CHUNK_BYTES mirror the
 * consumer's, for `filerelay send`.
 */
export const cliEnvSchema = z.object({
  ...commonEnvShape({ httpPort: 0 }),
  INLINE_MAX_BYTES: envBytes("Files up to this size travel in the message body; larger ones via the Object Store", {
    max: 64 * 1024 * 1024,
  }).default(262_144),
  PAYLOAD_CHUNK_BYTES: envBytes("Chunk size of payloads uploaded to the Object Store", {
    min: 1024,
    max: 8 * 1024 * 1024,
  }).default(1_048_576),
});

export type CliConfig = Readonly<z.output<typeof cliEnvSchema>>;

/** Flags that override the environment. */
export interface CliConfigOverrides {
  server?: string | undefined;
  stream?: string | undefined;
  subject?: string | undefined;
}

const FLAGS = { server: "NATS_URL", stream: "STREAM", subject: "SUBJECT" } as const;

/** Environment + `.env` + flags; throws ConfigError (exit 78) listing every problem. */
export async function loadCliConfig(overrides: CliConfigOverrides, env: Env = process.env): Promise<CliConfig> {
  const merged: Env = { ...env };
  for (const [flag, variable] of Object.entries(FLAGS)) {
    const value = overrides[flag as keyof typeof FLAGS];
    if (value !== undefined) merged[variable] = value;
  }
  try {
    return await loadConfig(cliEnvSchema, merged, { envFile: ".env" });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    // A value given as a flag is reported under the flag's name.
    const named = err.problems.map((p) => {
      const given = Object.entries(FLAGS).find(
        ([flag, variable]) => overrides[flag as keyof typeof FLAGS] !== undefined && p.startsWith(`${variable}:`),
      );
      return given ? `--${given[0]} (${given[1]})${p.slice(given[1].length)}` : p;
    });
    throw new ConfigError(named, { cause: err });
  }
}

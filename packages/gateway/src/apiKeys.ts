import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { z } from "zod";
import { ConfigError, describeError } from "@filerelay/core";
import { HttpError } from "./httpError.js";

export const ROLES = ["read", "upload", "admin"] as const;
export type Role = (typeof ROLES)[number];

/** admin ⊃ upload ⊃ read. */
const RANK: Record<Role, number> = { read: 1, upload: 2, admin: 3 };

export const apiKeyEntrySchema = z.object({
  name: z.string().min(1),
  role: z.enum(ROLES),
  sha256: z
    .string()
    .regex(/^[0-9a-fA-F]{64}$/, "expected the hex SHA-256 of the key (64 hex digits)")
    .transform((s) => s.toLowerCase()),
  source: z
    .string()
    .regex(/^[^\s/\\]+$/, "expected a name without spaces or slashes")
    .optional(),
});
export const apiKeysFileSchema = z.array(apiKeyEntrySchema);

/** An authenticated caller: publishes as `source`. */
export interface Principal {
  name: string;
  role: Role;
  source: string;
}

export interface ApiKeys {
  /** The principal whose key hashes to the presented one, if any. */
  lookup(key: string): Principal | undefined;
  readonly size: number;
}

export function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** Builds the lookup from validated entries; a duplicate hash is a configuration error. */
export function buildApiKeys(entries: readonly z.output<typeof apiKeyEntrySchema>[]): ApiKeys {
  const byHash = new Map<string, Principal>();
  for (const e of entries) {
    if (byHash.has(e.sha256)) throw new ConfigError([`GATEWAY_API_KEYS_FILE: key ${e.name} is listed twice`]);
    byHash.set(e.sha256, { name: e.name, role: e.role, source: e.source ?? e.name });
  }
  return {
    size: byHash.size,
    lookup(key) {
      // Looked up by digest: the clear key is never compared byte by byte, so timing tells nothing about it.
      return byHash.get(sha256Hex(key));
    },
  };
}

/** Reads GATEWAY_API_KEYS_FILE; every problem is a ConfigError naming the variable (exit 78). */
export async function loadApiKeys(file: string): Promise<ApiKeys> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, "utf8"));
  } catch (err) {
    throw new ConfigError([`GATEWAY_API_KEYS_FILE: cannot read ${file}: ${describeError(err)}`], { cause: err });
  }
  const parsed = apiKeysFileSchema.safeParse(raw);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((i) => `GATEWAY_API_KEYS_FILE: ${i.path.join(".") || "(file)"}: ${i.message}`),
    );
  }
  return buildApiKeys(parsed.data);
}

/** The bearer token of an Authorization header, if it has one. */
export function bearerToken(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m?.[1];
}

export function roleAllows(has: Role, needs: Role): boolean {
  return RANK[has] >= RANK[needs];
}

/**
 * Who is calling and whether they may: 401 without a valid key, 403 when the
 * key's role is below `needs`.
 */
export function authorize(keys: ApiKeys, authorization: string | undefined, needs: Role): Principal {
  const token = bearerToken(authorization);
  const principal = token === undefined ? undefined : keys.lookup(token);
  if (!principal)
    throw new HttpError(401, "AUTH_REQUIRED", "a valid API key is required (Authorization: Bearer <key>)");
  if (!roleAllows(principal.role, needs)) {
    throw new HttpError(403, "AUTH_FORBIDDEN", `the key ${principal.name} (role ${principal.role}) may not ${needs}`);
  }
  return principal;
}

/**
 * The JetStream Object Store wire format, as every NATS client reads and
 * writes it: chunks on `$O.<bucket>.C.<nuid>`, the meta record (JSON) on
 * `$O.<bucket>.M.<b64url(name)>`, both in stream `OBJ_<bucket>` (see
 * objectStreamName in names.ts), and the digest as `SHA-256=<b64url>`.
 */

export const DEFAULT_PAYLOAD_CHUNK_BYTES = 1024 * 1024;
const DIGEST_PREFIX = "SHA-256=";

/** The Object Store meta record (JSON body of the meta message), as far as we use it. */
export interface PayloadObjectInfo {
  name: string;
  bucket: string;
  nuid: string;
  size: number;
  chunks: number;
  digest: string;
  mtime: string;
  deleted?: boolean;
  options?: { max_chunk_size?: number };
  metadata?: Record<string, string>;
}

export function objectChunkSubject(bucket: string, id: string): string {
  return `$O.${bucket}.C.${id}`;
}

/** Every chunk subject of a bucket: `$O.<bucket>.C.>`. */
export function objectChunkFilter(bucket: string): string {
  return `$O.${bucket}.C.>`;
}

/** The upload id (nuid) of a chunk subject of this bucket; undefined for any other subject. */
export function objectChunkId(bucket: string, subject: string): string | undefined {
  const prefix = objectChunkSubject(bucket, "");
  return subject.startsWith(prefix) ? subject.slice(prefix.length) : undefined;
}

/** An object name as one subject token (padded base64url), as every Object Store client encodes it. */
export function objectNameToken(name: string): string {
  return Buffer.from(name, "utf8").toString("base64").replace(/\+/g, "-").replace(/\//g, "_");
}

/** Meta subject: `$O.<bucket>.M.<objectNameToken(name)>`. */
export function objectMetaSubject(bucket: string, name: string): string {
  return `$O.${bucket}.M.${objectNameToken(name)}`;
}

/** Every meta subject of a bucket: `$O.<bucket>.M.>`. */
export function objectMetaFilter(bucket: string): string {
  return `$O.${bucket}.M.>`;
}

/** Hex SHA-256 of an object's content from its meta record (undefined for a foreign digest form). */
export function objectSha256(info: PayloadObjectInfo): string | undefined {
  return info.metadata?.["filerelay-sha256"] ?? digestToHex(info.digest);
}

/** Hex SHA-256 from a meta record's `digest` (undefined for another algorithm or a malformed value). */
export function digestToHex(digest: string): string | undefined {
  if (!digest.startsWith(DIGEST_PREFIX)) return undefined;
  const raw = Buffer.from(digest.slice(DIGEST_PREFIX.length).replace(/-/g, "+").replace(/_/g, "/"), "base64");
  return raw.length === 32 ? raw.toString("hex") : undefined;
}

/** A meta record's `digest` for a hex SHA-256. */
export function hexToDigest(hex: string): string {
  const b64 = Buffer.from(hex, "hex").toString("base64").replace(/\+/g, "-").replace(/\//g, "_");
  return `${DIGEST_PREFIX}${b64}`;
}

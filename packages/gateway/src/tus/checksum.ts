import { createHash } from "node:crypto";

/** Algorithms of the tus checksum extension this server verifies (Tus-Checksum-Algorithm). */
export const TUS_CHECKSUM_ALGORITHMS = ["sha1", "sha256", "md5"] as const;
export type TusChecksumAlgorithm = (typeof TUS_CHECKSUM_ALGORITHMS)[number];

/**
 * What @tus/server expects a hook or store to throw to answer with a given
 * status and body (it reads `status_code` and `body`).
 */
export class TusError extends Error {
  constructor(
    readonly status_code: number,
    readonly body: string,
  ) {
    super(body.trim());
    this.name = "TusError";
  }
}

export interface ExpectedChecksum {
  algorithm: TusChecksumAlgorithm;
  /** The digest, base64 as the header carries it. */
  digest: string;
}

/**
 * Parses an `Upload-Checksum: <algorithm> <base64 digest>` header. Undefined
 * for no header; throws a tus error (400) for an unknown algorithm or a
 * malformed value.
 */
export function parseUploadChecksum(header: string | null): ExpectedChecksum | undefined {
  if (header === null) return undefined;
  const m = /^\s*([A-Za-z0-9-]+)\s+([A-Za-z0-9+/=]+)\s*$/.exec(header);
  const algorithm = m?.[1]?.toLowerCase();
  if (!m || !algorithm || !(TUS_CHECKSUM_ALGORITHMS as readonly string[]).includes(algorithm)) {
    throw new TusError(400, "Upload-Checksum: unsupported algorithm or malformed value\n");
  }
  return { algorithm: algorithm as TusChecksumAlgorithm, digest: m[2]! };
}

export function checksumHasher(expected: ExpectedChecksum) {
  const hash = createHash(expected.algorithm);
  return {
    update: (chunk: Uint8Array) => hash.update(chunk),
    matches: () => hash.digest("base64") === expected.digest,
  };
}

import type { Envelope } from "@filerelay/core";

/** User metadata names (stored as x-amz-meta-*). */
export const S3_METADATA = {
  id: "filerelay-id",
  source: "filerelay-source",
  sha256: "filerelay-sha256",
  filename: "filerelay-filename",
} as const;

/**
 * Metadata travels in HTTP headers, which must be printable ASCII: anything
 * else (and '%', so it stays reversible) is percent-encoded. Read back with
 * decodeURIComponent.
 */
export function encodeMetadataValue(value: string): string {
  return value.replace(/[^\x20-\x7e]|%/gu, (c) => encodeURIComponent(c));
}

/** The metadata an object written for `envelope` carries: what idempotency and verification read back. */
export function objectMetadata(envelope: Envelope): Record<string, string> {
  return {
    [S3_METADATA.id]: envelope.id,
    [S3_METADATA.source]: encodeMetadataValue(envelope.source),
    [S3_METADATA.sha256]: envelope.sha256,
    [S3_METADATA.filename]: encodeMetadataValue(envelope.filename),
  };
}

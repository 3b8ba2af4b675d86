/**
 * Extraction limits (pure decisions): an archive is refused as soon as what
 * it expands to, counted over every nesting level, would pass a limit. The
 * compression ratio is measured against the bytes of the outermost archive,
 * and only once the expansion is past RATIO_FLOOR_BYTES, so small files that
 * compress extremely well (a few KiB of zeros) are not refused for it.
 */

export const RATIO_FLOOR_BYTES = 1024 * 1024;

export interface ExtractLimits {
  maxBytes: number;
  maxFiles: number;
  /** Expanded bytes per byte of the outermost archive. */
  maxRatio: number;
}

export interface ExtractTally {
  /** Bytes of every entry so far (nested archives and their entries both count). */
  bytes: number;
  /** Entries so far (directories excluded). */
  files: number;
  /** Size of the outermost archive. */
  archiveBytes: number;
}

/** Why the archive is refused, or undefined while it is within its limits. */
export function limitExceeded(t: ExtractTally, limits: ExtractLimits): string | undefined {
  if (t.files > limits.maxFiles) return `has more than EXTRACT_MAX_FILES (${limits.maxFiles}) entries`;
  if (t.bytes > limits.maxBytes) {
    return `expands to more than EXTRACT_MAX_BYTES (${limits.maxBytes}) bytes`;
  }
  if (t.bytes > RATIO_FLOOR_BYTES && t.bytes > limits.maxRatio * Math.max(t.archiveBytes, 1)) {
    return (
      `expands more than EXTRACT_MAX_RATIO (${limits.maxRatio}) times its own size ` +
      `(${t.archiveBytes} bytes → over ${t.bytes}): a compression bomb`
    );
  }
  return undefined;
}

/**
 * A zip entry's own ratio, from its declared sizes (before a byte is
 * inflated): uncompressed past the floor and more than maxRatio times the
 * compressed size. A lying declaration is caught while inflating (the count
 * of real bytes is checked against the same limits).
 */
export function entryRatioExceeded(uncompressed: number, compressed: number, maxRatio: number): boolean {
  return uncompressed > RATIO_FLOOR_BYTES && uncompressed > maxRatio * Math.max(compressed, 1);
}

import { createHash } from "node:crypto";
import type { FileHandle } from "node:fs/promises";

/** How much of the file's beginning goes into its fingerprint. */
export const FINGERPRINT_HEAD_BYTES = 64 * 1024;

export interface FingerprintInput {
  /** The first FINGERPRINT_HEAD_BYTES bytes (fewer for a smaller file). */
  head: Uint8Array;
  /**
   * The SHA-256 (hex) of the whole content, when it was read whole anyway
   * (inline files): it then stands in for the head, so two versions that
   * differ only after the first 64 KiB never share a fingerprint.
   */
  sha256?: string | undefined;
  size: number;
  mtimeMs: number;
  /** Inode and status-change time: what a copy that keeps mtimes (cp -p, rsync -t, tar -x) cannot reproduce. */
  ino: number;
  ctimeMs: number;
  source: string;
  /** Path relative to INPUT_DIR, '/'-separated. */
  relPath: string;
}

/**
 * Identifies one version of one file without reading all of it: SHA-256 over
 * the content digest (whole file when known, else its head), size, mtime,
 * inode, ctime, source and relative path (hex, so it is a valid KV key). The
 * same version always yields the same value, across restarts and replicas;
 * any append, rewrite, touch or replacement yields a new one, including a
 * copy that restores the old size, mtime and first bytes (its ctime differs:
 * the kernel sets it on every write and no call can set it back).
 */
export function computeFingerprint(input: FingerprintInput): string {
  const content = input.sha256 ? `sha256:${input.sha256}` : createHash("sha256").update(input.head).digest("hex");
  return createHash("sha256")
    .update(
      // NUL separators: no field can contain one, so the encoding is unambiguous.
      `filerelay-fp-v2\0${input.source}\0${input.relPath}\0${input.size}\0${input.mtimeMs}\0${input.ino}\0${input.ctimeMs}\0${content}`,
    )
    .digest("hex");
}

/** The first FINGERPRINT_HEAD_BYTES of an open file (fewer if it is shorter). */
export async function readHead(fh: FileHandle, size: number): Promise<Buffer> {
  const want = Math.min(size, FINGERPRINT_HEAD_BYTES);
  const buf = Buffer.allocUnsafe(want);
  let total = 0;
  while (total < want) {
    const { bytesRead } = await fh.read(buf, total, want - total, total);
    if (bytesRead === 0) break;
    total += bytesRead;
  }
  return buf.subarray(0, total);
}

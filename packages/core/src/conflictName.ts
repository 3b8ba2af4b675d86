import { posix } from "node:path";
import { MAX_NAME_BYTES } from "./envelope.js";

/**
 * The name of the n-th clash at `path`: `dir/report.csv` → `dir/report-2.csv`.
 * The suffix goes before the extension (a dotfile-like name such as `.env`
 * has none to keep); the stem is shortened, on a character boundary, so the
 * last component stays within `maxNameBytes` of UTF-8. When even the suffix
 * with the extension is too long, the extension is given up instead. Works
 * on '/'-separated paths, absolute or relative, and on S3 keys.
 */
export function withNumericSuffix(path: string, n: number, maxNameBytes = MAX_NAME_BYTES): string {
  const slash = path.lastIndexOf("/");
  const dir = path.slice(0, slash + 1);
  const base = path.slice(slash + 1);
  const ext = posix.extname(base);
  const suffix = `-${n}${ext}`;
  if (Buffer.byteLength(suffix) <= maxNameBytes) {
    const stem = base.slice(0, base.length - ext.length);
    return dir + truncateUtf8(stem, maxNameBytes - Buffer.byteLength(suffix)) + suffix;
  }
  const bare = `-${n}`;
  return dir + truncateUtf8(base, maxNameBytes - Buffer.byteLength(bare)) + bare;
}

/** The longest prefix of `text` within `maxBytes` of UTF-8, cut between code points. */
export function truncateUtf8(text: string, maxBytes: number): string {
  if (Buffer.byteLength(text) <= maxBytes) return text;
  let out = "";
  let bytes = 0;
  for (const ch of text) {
    const n = Buffer.byteLength(ch);
    if (bytes + n > maxBytes) break;
    out += ch;
    bytes += n;
  }
  return out;
}

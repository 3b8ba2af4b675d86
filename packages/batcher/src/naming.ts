/**
 * Batch file names: `YYYYMMDD_HHMMSS[_<key>][_raw][_NNN].<ext>`, UTC at the
 * window's close. `_002`, `_003` … number the second and later batches of one
 * key (raw fallbacks counted apart) closed within the same second, so no two
 * batches share a name, and a plain sort lists them in closing order: the
 * suffix comes last, where the first batch's `.` sorts before `_`, and is
 * zero-padded so `_010` sorts after `_009` (in order up to 999 per second).
 */

export interface BatchNameParts {
  closedAt: Date;
  /** The BATCH_KEY token value, or undefined without BATCH_KEY. */
  key?: string | undefined;
  raw: boolean;
  /** Without the dot: xml, json, jsonl, txt. */
  ext: string;
  /** 0 for the first batch of this key in this second, then 1, 2 … */
  ordinal: number;
}

const pad = (n: number, width = 2) => String(n).padStart(width, "0");

/** `20250729_161500` */
export function utcStamp(d: Date): string {
  return (
    `${d.getUTCFullYear()}${pad(d.getUTCMonth() + 1)}${pad(d.getUTCDate())}` +
    `_${pad(d.getUTCHours())}${pad(d.getUTCMinutes())}${pad(d.getUTCSeconds())}`
  );
}

/** A subject token made safe as part of a file name: anything outside [A-Za-z0-9_-] becomes `_`. */
export function safeKey(token: string): string {
  const cleaned = token.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 64);
  return cleaned === "" ? "_" : cleaned;
}

export function batchFileName(parts: BatchNameParts): string {
  const key = parts.key !== undefined ? `_${safeKey(parts.key)}` : "";
  const ordinal = parts.ordinal > 0 ? `_${pad(parts.ordinal + 1, 3)}` : "";
  return `${utcStamp(parts.closedAt)}${key}${parts.raw ? "_raw" : ""}${ordinal}.${parts.ext}`;
}

/**
 * Hands out the ordinal of each (key, second): the first batch of a key in a
 * given second gets 0, the next 1, and so on. Only the latest second per key
 * is remembered, since close times only move forward.
 */
export class NameOrdinals {
  private readonly last = new Map<string, { stamp: string; next: number }>();

  next(closedAt: Date, key: string | undefined): number {
    const stamp = utcStamp(closedAt);
    const id = key ?? "";
    const seen = this.last.get(id);
    if (seen && seen.stamp === stamp) return seen.next++;
    if (this.last.size > 10_000) this.last.clear();
    this.last.set(id, { stamp, next: 1 });
    return 0;
  }
}

/** The BATCH_KEY token of `subject` (1-based position), or `_` when the subject is shorter. */
export function subjectKey(subject: string, position: number | undefined): string | undefined {
  if (position === undefined) return undefined;
  const token = subject.split(".")[position - 1];
  return token === undefined || token === "" ? "_" : token;
}

/** File extension of a batch: raw fallbacks keep the format's own extension. */
export function batchExtension(format: "xml" | "jsonl" | "raw", convert: "none" | "json", raw: boolean): string {
  if (format === "xml") return convert === "json" && !raw ? "json" : "xml";
  if (format === "jsonl") return "jsonl";
  return "txt";
}

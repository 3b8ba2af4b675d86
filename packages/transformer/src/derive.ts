import { fileVersionId } from "@filerelay/core";

/**
 * Names and ids of derived files (pure). A derived file's ce-id is a UUIDv5
 * of its parent's ce-id and the derivation, so a stage that redoes its work
 * after a crash publishes the same ids and JetStream drops the second copy.
 */

/** The ce-id of the file derived from `parentId` by `derivation` (e.g. `unpack:reports/q1.csv`). */
export function derivedId(parentId: string, derivation: string): string {
  return fileVersionId(`filerelay-derived\n${parentId}\n${derivation}`);
}

/** Derivations: each names one way a file comes out of another. */
export const DERIVATIONS = {
  /** The file passed on as it is (KEEP_ORIGINAL, or no step changed it). */
  passThrough: "pass",
  /** An archive entry, by its path inside the archive. */
  entry: (path: string) => `unpack:${path}`,
  /** The Parquet file converted from a data file. */
  parquet: "convert:parquet",
} as const;

/**
 * The ce-subject of an archive entry: its path inside the archive, under the
 * archive's own path (`in/bundle.tar.gz` + `reports/q1.csv` →
 * `in/bundle.tar.gz/reports/q1.csv`), so a sink's {{.RelDir}} keeps the
 * archive's structure beside the other files of its folder.
 */
export function entrySubject(archiveSubject: string, entryPath: string): string {
  return `${archiveSubject}/${entryPath}`;
}

/** The ce-subject of the Parquet file converted from `subject`: the same path, extension `.parquet`. */
export function parquetSubject(subject: string): string {
  const slash = subject.lastIndexOf("/");
  const dir = subject.slice(0, slash + 1);
  const name = subject.slice(slash + 1);
  const dot = name.lastIndexOf(".");
  return `${dir}${dot > 0 ? name.slice(0, dot) : name}.parquet`;
}

export type EntryPathVerdict = { ok: true; path: string; directory: boolean } | { ok: false; reason: string };

/**
 * Whether an archive entry's name stays inside the archive's root, and its
 * normalized `/`-separated form. Refused: absolute paths (`/x`, `C:\x`,
 * `\\server\x`), any `..` segment, NUL and other control characters, and an
 * empty name. Backslashes count as separators (zip files made on Windows), `.`
 * and empty segments are dropped. A trailing `/` marks a directory.
 */
export function checkEntryPath(raw: string): EntryPathVerdict {
  if (raw.length === 0) return { ok: false, reason: "empty entry name" };
  // Control characters would reach file names and logs: refused, not rewritten.
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(raw))
    return { ok: false, reason: `entry name ${JSON.stringify(raw)} has control characters` };
  const name = raw.replace(/\\/g, "/");
  if (name.startsWith("/")) return { ok: false, reason: `absolute entry path ${JSON.stringify(raw)}` };
  if (/^[A-Za-z]:/.test(name)) return { ok: false, reason: `absolute (drive) entry path ${JSON.stringify(raw)}` };
  const segments = name.split("/");
  if (segments.includes(".."))
    return { ok: false, reason: `entry path ${JSON.stringify(raw)} leaves the archive (..)` };
  const kept = segments.filter((s) => s !== "" && s !== ".");
  if (kept.length === 0) {
    return name.endsWith("/")
      ? { ok: true, path: "", directory: true }
      : { ok: false, reason: `entry name ${JSON.stringify(raw)} names nothing` };
  }
  return { ok: true, path: kept.join("/"), directory: name.endsWith("/") };
}

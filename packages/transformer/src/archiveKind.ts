/** The archive formats unpack reads, told from the file name (pure). */
export type ArchiveKind = "zip" | "tar" | "tar.gz" | "gz";

export function archiveKind(filename: string): ArchiveKind | undefined {
  const name = filename.toLowerCase();
  if (name.endsWith(".zip")) return "zip";
  if (name.endsWith(".tar")) return "tar";
  if (name.endsWith(".tar.gz") || name.endsWith(".tgz")) return "tar.gz";
  if (name.endsWith(".gz")) return "gz";
  return undefined;
}

/** The name of the one file inside a .gz (`data.csv.gz` → `data.csv`). */
export function gunzippedName(filename: string): string {
  const stem = filename.replace(/\.gz$/i, "");
  return stem.length > 0 ? stem : "data";
}

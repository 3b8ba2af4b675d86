/**
 * The status ledger's record of one file version (DESIGN §8), folded from
 * the entries its source and each sink group wrote. Pure: no I/O here.
 */

/** Roll-up state of a file version. */
export type FileState = "received" | "published" | "delivered" | "failed" | "error";
export const FILE_STATES: readonly FileState[] = ["received", "published", "delivered", "failed", "error"];

export type SourceState = "received" | "published" | "error";
export type DeliveryState = "in_progress" | "delivered" | "failed";

/** What a file version is; every entry carries it, so a record reads whole even if one entry was lost. */
export interface FileFacts {
  id: string;
  source: string;
  subject: string;
  filename: string;
  size: number | null;
  sha256: string | null;
  contentType: string | null;
  jobId: string | null;
  parentId: string | null;
}

interface EntryBase extends FileFacts {
  /** When this entry was written (ISO 8601). */
  at: string;
  /** The service that wrote it (consumer, producer, gateway, …). */
  by: string;
  code?: string;
  reason?: string;
  attempts?: number;
}

export interface SourceEntry extends EntryBase {
  kind: "source";
  state: SourceState;
  /** When the source detected or received the file. */
  detectedAt?: string;
  /** The sink groups whose delivery makes the file `delivered` (the source's SINK_GROUPS). */
  groups: string[];
  /** Where the file is now when the source gave up (its ERROR_DIR copy). */
  location?: string;
}

export interface GroupEntry extends EntryBase {
  kind: "group";
  group: string;
  state: DeliveryState;
  location?: string;
  bytes?: number;
}

export type StatusEntry = SourceEntry | GroupEntry;

export interface Delivery {
  state: DeliveryState;
  location?: string;
  code?: string;
  reason?: string;
  attempts: number;
  at: string;
  by: string;
}

export interface FileEvent {
  at: string;
  by: string;
  event: string;
  group?: string;
}

export interface FileRecord extends FileFacts {
  children: string[];
  state: FileState;
  publishedAt: string | null;
  updatedAt: string;
  progress: { bytes: number; total: number | null };
  deliveries: Record<string, Delivery>;
  /** Set when the source gave up (state `error`). */
  error?: { code?: string; reason?: string; attempts?: number; location?: string };
  events: FileEvent[];
}

/**
 * Folds the entries of one file version into its record. `fallbackGroups`
 * decides `delivered` when the source's entry (which names its groups) is
 * not among them. `entries` are in stream order; where one (id, who) has
 * several (a state change the writer did not supersede), the last wins.
 */
export function foldRecord(
  entries: readonly StatusEntry[],
  fallbackGroups: readonly string[],
  children: readonly string[] = [],
): FileRecord | undefined {
  const first = entries[0];
  if (!first) return undefined;
  let source: SourceEntry | undefined;
  const groups = new Map<string, GroupEntry>();
  for (const e of entries) {
    if (e.kind === "source") source = e;
    else groups.set(e.group, e);
  }
  const facts = factsOf(source ?? [...groups.values()].at(-1) ?? first);
  const deliveries: Record<string, Delivery> = {};
  for (const [name, g] of [...groups.entries()].sort(([a], [b]) => a.localeCompare(b))) {
    deliveries[name] = {
      state: g.state,
      ...(g.location !== undefined ? { location: g.location } : {}),
      ...(g.code !== undefined ? { code: g.code } : {}),
      ...(g.reason !== undefined ? { reason: g.reason } : {}),
      attempts: g.attempts ?? 1,
      at: g.at,
      by: g.by,
    };
  }
  const expected = source && source.groups.length > 0 ? source.groups : fallbackGroups;
  const state = rollUp(source?.state, deliveries, expected);
  const times = entries.map((e) => e.at).sort();
  const delivered = Object.values(deliveries).filter((d) => d.state === "delivered").length;
  const inProgress = [...groups.values()].filter((g) => g.state === "in_progress" && g.bytes !== undefined);
  const progressBytes = delivered > 0 ? (facts.size ?? 0) : Math.max(0, ...inProgress.map((g) => g.bytes ?? 0));
  return {
    ...facts,
    children: [...children],
    state,
    publishedAt: source?.state === "published" ? source.at : null,
    updatedAt: times.at(-1) ?? first.at,
    progress: { bytes: progressBytes, total: facts.size },
    deliveries,
    ...(source?.state === "error"
      ? {
          error: {
            ...(source.code !== undefined ? { code: source.code } : {}),
            ...(source.reason !== undefined ? { reason: source.reason } : {}),
            ...(source.attempts !== undefined ? { attempts: source.attempts } : {}),
            ...(source.location !== undefined ? { location: source.location } : {}),
          },
        }
      : {}),
    events: timeline(source, [...groups.values()]),
  };
}

/**
 * `error` when the source gave up; `failed` when a group dead-lettered it;
 * `delivered` once every expected group delivered it; otherwise `published`
 * (or `received` while the source still takes it in).
 */
export function rollUp(
  source: SourceState | undefined,
  deliveries: Readonly<Record<string, Pick<Delivery, "state">>>,
  expectedGroups: readonly string[],
): FileState {
  if (source === "error") return "error";
  const all = Object.values(deliveries);
  if (all.some((d) => d.state === "failed")) return "failed";
  const expected = expectedGroups.length > 0 ? expectedGroups : Object.keys(deliveries);
  if (expected.length > 0 && expected.every((g) => deliveries[g]?.state === "delivered")) return "delivered";
  if (source === "received" && all.length === 0) return "received";
  return "published";
}

function factsOf(e: StatusEntry): FileFacts {
  return {
    id: e.id,
    source: e.source,
    subject: e.subject,
    filename: e.filename,
    size: e.size,
    sha256: e.sha256,
    contentType: e.contentType,
    jobId: e.jobId,
    parentId: e.parentId,
  };
}

function timeline(source: SourceEntry | undefined, groups: readonly GroupEntry[]): FileEvent[] {
  const events: FileEvent[] = [];
  if (source?.detectedAt) events.push({ at: source.detectedAt, by: source.by, event: "detected" });
  if (source) events.push({ at: source.at, by: source.by, event: source.state });
  for (const g of groups) events.push({ at: g.at, by: g.by, event: g.state, group: g.group });
  return events.sort((a, b) => a.at.localeCompare(b.at));
}

/** Groups entries by file version id, keeping stream order within each. */
export function groupById(entries: Iterable<StatusEntry>): Map<string, StatusEntry[]> {
  const byId = new Map<string, StatusEntry[]>();
  for (const e of entries) {
    const list = byId.get(e.id);
    if (list) list.push(e);
    else byId.set(e.id, [e]);
  }
  return byId;
}

/** Parses one stored entry; undefined for anything that is not one (a foreign message on the subject). */
export function parseEntry(data: Uint8Array): StatusEntry | undefined {
  try {
    const v = JSON.parse(new TextDecoder().decode(data)) as Partial<StatusEntry> | null;
    if (!v || typeof v !== "object" || typeof v.id !== "string" || typeof v.at !== "string") return undefined;
    if (v.kind === "source" && Array.isArray(v.groups)) return v as SourceEntry;
    if (v.kind === "group" && typeof v.group === "string") return v as GroupEntry;
    return undefined;
  } catch {
    return undefined;
  }
}

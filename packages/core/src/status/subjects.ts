import { createHash } from "node:crypto";

/**
 * Ledger entries are indexed by their subject, so the broker filters queries
 * (nats-server 2.9 has no other secondary index):
 *
 *   <prefix>.<id>.<who>.<state>.<source>.<path>.<job>.<parent>
 *
 * `who` is `src` for the source's entry or `g-<group>` for a sink group's;
 * `path` is a digest of source + relative path (paths may hold any
 * character); the other tokens are the values themselves when they are
 * plain, else a digest. The stream keeps one message per subject, so an
 * entry written twice (a redelivery) is stored once.
 */

/** A value that is not a plain subject token becomes `~` + a digest of it. */
export function subjectToken(value: string | null | undefined): string {
  if (value === null || value === undefined || value === "") return "_";
  if (/^[A-Za-z0-9_-]{1,64}$/.test(value) && value !== "_") return value;
  return `~${digest(value)}`;
}

/** The token that finds every version of one source's relative path. */
export function pathToken(source: string, path: string): string {
  return digest(`${source}\n${path}`);
}

function digest(value: string): string {
  return createHash("sha256").update(value).digest("hex").slice(0, 24);
}

export const SOURCE_WHO = "src";

/** The `who` token of a sink group's entries. */
export function groupWho(group: string): string {
  return `g-${subjectToken(group)}`;
}

export interface EntryKey {
  id: string;
  /** SOURCE_WHO or groupWho(group). */
  who: string;
  state: string;
  source: string;
  path: string;
  jobId?: string | null | undefined;
  parentId?: string | null | undefined;
}

export function entrySubject(prefix: string, key: EntryKey): string {
  return [
    prefix,
    subjectToken(key.id),
    key.who,
    key.state,
    subjectToken(key.source),
    pathToken(key.source, key.path),
    subjectToken(key.jobId),
    subjectToken(key.parentId),
  ].join(".");
}

/** Every entry of one (id, who), whatever its state: what a state change supersedes. */
export function entriesOfWho(prefix: string, id: string, who: string): string {
  return `${prefix}.${subjectToken(id)}.${who}.>`;
}

export interface EntryFilter {
  id?: string | undefined;
  who?: string | undefined;
  state?: string | undefined;
  source?: string | undefined;
  /** Needs `source` too. */
  path?: string | undefined;
  job?: string | undefined;
  parent?: string | undefined;
}

/** The one subject filter (wildcards for what is not asked) that selects the entries a query needs. */
export function entryFilterSubject(prefix: string, f: EntryFilter): string {
  const tokens = [
    f.id === undefined ? "*" : subjectToken(f.id),
    f.who ?? "*",
    f.state ?? "*",
    f.source === undefined ? "*" : subjectToken(f.source),
    f.path === undefined || f.source === undefined ? "*" : pathToken(f.source, f.path),
    f.job === undefined ? "*" : subjectToken(f.job),
    f.parent === undefined ? "*" : subjectToken(f.parent),
  ];
  // Trailing wildcards fold into one `>`: the broker matches it faster.
  while (tokens.length > 1 && tokens[tokens.length - 1] === "*") tokens.pop();
  const last = tokens.length - 1;
  if (tokens[last] === "*") tokens[last] = ">";
  else if (tokens.length < 7) tokens.push(">");
  return `${prefix}.${tokens.join(".")}`;
}

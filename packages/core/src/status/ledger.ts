import {
  DeliverPolicy,
  DiscardPolicy,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
} from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { DEFAULT_STATUS_MAX_AGE_MS } from "../config.js";
import type { Envelope } from "../envelope.js";
import { describeError, NatsError } from "../errors.js";
import { isStreamNotFound } from "../jetstreamErrors.js";
import { silentLogger, type Logger } from "../logger.js";
import { jetstreamNames, type JetStreamNames } from "../names.js";
import { OrderedChunkReader } from "../payload/orderedReader.js";
import {
  foldRecord,
  groupById,
  parseEntry,
  type DeliveryState,
  type FileFacts,
  type FileRecord,
  type FileState,
  type GroupEntry,
  type SourceEntry,
  type SourceState,
  type StatusEntry,
} from "./record.js";
import {
  entriesOfWho,
  entryFilterSubject,
  entrySubject,
  groupWho,
  SOURCE_WHO,
  type EntryFilter,
  type EntryKey,
} from "./subjects.js";
import { StatusWatch, type StatusUpdate, type WatchFilter } from "./watch.js";

const NS_PER_MS = 1_000_000;
/** Byte progress of one file is published at most this often (about 4 a second). */
export const PROGRESS_INTERVAL_MS = 250;
const WRITE_TIMEOUT_MS = 5000;
/** Files whose last progress time is remembered at once (for the throttle). */
const MAX_PROGRESS_TRACKED = 10_000;
const SCAN_BATCH = 1000;
const SCAN_STALL_MS = 10_000;
/** After finding no ledger stream, writes are skipped this long before trying again. */
const ABSENT_RETRY_MS = 60_000;
/** Records completed at once by list(). */
const LIST_FETCH_CONCURRENCY = 16;

export interface StatusLedgerOptions {
  /** The deployment's STREAM (default FILES): the ledger is `<STREAM>_STATUS`. */
  stream?: string;
  /** Who writes: the service name (consumer, producer, gateway, …) shown in timelines. */
  by: string;
  /** Create (or update) the ledger stream (default true). A reader or an SDK sink may skip it. */
  provision?: boolean;
  /** STATUS_MAX_AGE: how long records are kept (default 7 days). */
  maxAgeMs?: number;
  /** STREAM_REPLICAS. */
  replicas?: number;
  /**
   * The sink groups whose delivery makes a file `delivered`: recorded with
   * each file this service publishes, and the reader's fallback for records
   * whose source entry is missing.
   */
  sinkGroups?: readonly string[];
  log?: Logger;
}

export interface StatusFilter {
  state?: FileState | undefined;
  source?: string | undefined;
  /** Relative path (ce-subject); needs `source`. */
  path?: string | undefined;
  job?: string | undefined;
  parent?: string | undefined;
  /** Only records updated at or after this time. */
  since?: Date | undefined;
  /** Newest first, at most this many (default 100). */
  limit?: number | undefined;
}

export interface SourceExtra {
  code?: string | undefined;
  reason?: string | undefined;
  attempts?: number | undefined;
  location?: string | undefined;
  detectedAt?: Date | undefined;
  /** Replace an earlier entry of this source for the file (it recorded `received` before). */
  supersede?: boolean | undefined;
  /**
   * Send without waiting for the broker to confirm (cheaper; lost if the broker
   * fails meanwhile). Only for an entry that supersedes nothing.
   */
  unconfirmed?: boolean | undefined;
}

export interface DeliveryExtra {
  location?: string | undefined;
  code?: string | undefined;
  reason?: string | undefined;
  attempts: number;
  bytes?: number | undefined;
  /** Replace whatever this group recorded for the file before (a state change, a redelivery). */
  supersede?: boolean | undefined;
}

/** What a source knows of a file it has not published yet (no envelope). */
export type SourceFacts = Omit<FileFacts, "filename" | "contentType"> & {
  filename?: string | undefined;
  contentType?: string | null | undefined;
};

/**
 * The status ledger (DESIGN §8): each file version's life as entries in one
 * JetStream stream, `<STREAM>_STATUS` (limits retention, max age
 * STATUS_MAX_AGE, one message per subject). The source writes one entry
 * (received → published, or error), each sink group one (in_progress →
 * delivered or failed); the subject of an entry indexes it (see subjects.ts),
 * so queries are filtered by the broker. Byte progress goes over plain NATS
 * (never stored). Writing never throws for a missing ledger stream (another
 * deployment may run with STATUS=off); it throws for a broker that does not
 * answer, so a sink can retry rather than lose the record of a delivery.
 */
export class StatusLedger {
  readonly names: JetStreamNames;
  readonly #nc: NatsConnection;
  readonly #js: JetStreamClient;
  readonly #jsm: JetStreamManager;
  readonly #by: string;
  readonly #groups: readonly string[];
  readonly #log: Logger;
  readonly #lastProgress = new Map<string, number>();
  readonly #watches = new Set<StatusWatch>();
  #absentUntil = 0;
  readonly #present = new Set<string>();
  #closed = false;

  private constructor(nc: NatsConnection, jsm: JetStreamManager, options: StatusLedgerOptions) {
    this.#nc = nc;
    this.#jsm = jsm;
    this.#js = jetstream(nc, { timeout: WRITE_TIMEOUT_MS });
    this.#by = options.by;
    this.#groups = [...(options.sinkGroups ?? [])];
    this.#log = options.log ?? silentLogger();
    this.names = jetstreamNames({ STREAM: options.stream ?? "FILES", SUBJECT: "files.input" });
  }

  static async open(nc: NatsConnection, options: StatusLedgerOptions): Promise<StatusLedger> {
    const jsm = await jetstreamManager(nc);
    const ledger = new StatusLedger(nc, jsm, options);
    if (options.provision !== false) {
      await provisionStatusStream(jsm, ledger.names, {
        maxAgeMs: options.maxAgeMs ?? DEFAULT_STATUS_MAX_AGE_MS,
        replicas: options.replicas ?? 1,
        log: ledger.#log,
      });
    }
    return ledger;
  }

  /**
   * recordSource() for a caller that must not fail because of the ledger (the
   * file is already published): a failure is logged, not thrown.
   */
  async noteSource(facts: Envelope | SourceFacts, state: SourceState, extra: SourceExtra = {}): Promise<boolean> {
    try {
      await this.recordSource(facts, state, extra);
      return true;
    } catch (err) {
      this.#log.warn({ fileId: facts.id, state, err: describeError(err) }, "status ledger entry not recorded");
      return false;
    }
  }

  /** recordDelivery() that logs a failure instead of throwing (progress-only entries, dead letters). */
  async noteDelivery(envelope: Envelope, group: string, state: DeliveryState, extra: DeliveryExtra): Promise<boolean> {
    try {
      await this.recordDelivery(envelope, group, state, extra);
      return true;
    } catch (err) {
      this.#log.warn(
        { fileId: envelope.id, group, state, err: describeError(err) },
        "status ledger entry not recorded",
      );
      return false;
    }
  }

  /** The sink groups this service expects to deliver what it publishes. */
  get sinkGroups(): readonly string[] {
    return this.#groups;
  }

  /** A source's entry: the file was received (still coming in), published, or given up on. */
  async recordSource(facts: Envelope | SourceFacts, state: SourceState, extra: SourceExtra = {}): Promise<void> {
    const f = factsOf(facts);
    const entry: SourceEntry = {
      kind: "source",
      ...f,
      at: new Date().toISOString(),
      by: this.#by,
      state,
      groups: [...this.#groups],
      ...(extra.detectedAt ? { detectedAt: extra.detectedAt.toISOString() } : {}),
      ...(extra.code !== undefined ? { code: extra.code } : {}),
      ...(extra.reason !== undefined ? { reason: extra.reason } : {}),
      ...(extra.attempts !== undefined ? { attempts: extra.attempts } : {}),
      ...(extra.location !== undefined ? { location: extra.location } : {}),
    };
    if (extra.unconfirmed === true && extra.supersede !== true && !isIssue(state)) {
      this.#send(entry, SOURCE_WHO);
      return;
    }
    await this.#write(entry, SOURCE_WHO, extra.supersede === true);
    if (state !== "received") this.#lastProgress.delete(f.id);
  }

  /** A sink group's entry for one delivery of `envelope`. */
  async recordDelivery(envelope: Envelope, group: string, state: DeliveryState, extra: DeliveryExtra): Promise<void> {
    const entry: GroupEntry = {
      kind: "group",
      ...factsOf(envelope),
      at: new Date().toISOString(),
      by: this.#by,
      group,
      state,
      attempts: extra.attempts,
      ...(extra.location !== undefined ? { location: extra.location } : {}),
      ...(extra.code !== undefined ? { code: extra.code } : {}),
      ...(extra.reason !== undefined ? { reason: extra.reason } : {}),
      ...(extra.bytes !== undefined ? { bytes: extra.bytes } : {}),
    };
    await this.#write(entry, groupWho(group), extra.supersede === true);
    if (state !== "in_progress") this.#lastProgress.delete(envelope.id);
  }

  /**
   * Bytes of `id` moved so far (an upload, a write): sent at most every
   * PROGRESS_INTERVAL_MS per file, and always when complete. Never stored;
   * a watcher that misses one sees the next.
   */
  progress(id: string, bytes: number, total: number | null, group?: string): void {
    if (this.#closed || this.#nc.isClosed()) return;
    const now = Date.now();
    const last = this.#lastProgress.get(id);
    const done = total !== null && bytes >= total;
    if (!done && last !== undefined && now - last < PROGRESS_INTERVAL_MS) return;
    if (done) this.#lastProgress.delete(id);
    else {
      // Transfers that never finish (an abandoned upload) must not pile up here.
      if (this.#lastProgress.size >= MAX_PROGRESS_TRACKED) this.#lastProgress.clear();
      this.#lastProgress.set(id, now);
    }
    const update = { id, bytes, total, by: this.#by, ...(group ? { group } : {}), at: new Date(now).toISOString() };
    try {
      this.#nc.publish(`${this.names.progressPrefix}.${id}`, JSON.stringify(update));
    } catch {
      // Progress is advisory: a closed or reconnecting connection drops it.
    }
  }

  /** One record, with its derived children; undefined when the ledger has none (never seen, or expired). */
  async get(id: string): Promise<FileRecord | undefined> {
    const [entries, children] = await Promise.all([
      this.#scan(entryFilterSubject(this.names.statusPrefix, { id })),
      this.#scan(entryFilterSubject(this.names.statusPrefix, { who: SOURCE_WHO, parent: id })),
    ]);
    const childIds = [...new Set(children.map((e) => e.id))];
    return foldRecord(entries, this.#groups, childIds);
  }

  /**
   * Records matching `filter`, newest (last updated) first. `failed` and
   * `error` are found through their own entries (the broker filters them out
   * of any number of records); other states fold every entry in range. List
   * records carry no `children` (see get()).
   */
  async list(filter: StatusFilter = {}): Promise<FileRecord[]> {
    const limit = Math.max(1, filter.limit ?? 100);
    const byState = filter.state === "failed" || filter.state === "error";
    const f: EntryFilter = {
      ...(byState ? { state: filter.state } : {}),
      ...(filter.state === "error" ? { who: SOURCE_WHO } : {}),
      ...(filter.source !== undefined ? { source: filter.source } : {}),
      ...(filter.path !== undefined ? { path: filter.path } : {}),
      ...(filter.job !== undefined ? { job: filter.job } : {}),
      ...(filter.parent !== undefined ? { parent: filter.parent } : {}),
    };
    const subject = entryFilterSubject(this.names.statusPrefix, f);
    const narrowed = Object.keys(f).length > 0 || filter.since !== undefined;
    const matches = (r: FileRecord) =>
      (filter.state === undefined || r.state === filter.state) &&
      (filter.since === undefined || Date.parse(r.updatedAt) >= filter.since.getTime());

    let records: FileRecord[];
    if (byState) {
      // The small index of failures, not the ledger: its entries name their files.
      const entries = await this.#scan(
        entryFilterSubject(this.names.issuesPrefix, f),
        filter.since,
        undefined,
        this.names.issuesStream,
      );
      records = this.#fold(entries).filter(matches);
    } else if (narrowed) {
      const entries = await this.#scan(subject, filter.since);
      records = this.#fold(entries).filter(matches);
    } else {
      // Everything: read back from the end, widening the window until it holds enough.
      records = await this.#newest(limit, matches);
    }
    records.sort((a, b) => b.updatedAt.localeCompare(a.updatedAt) || a.id.localeCompare(b.id));
    records = records.slice(0, limit);
    if (byState) {
      // The entries that found them are one group's (or the source's): complete the records.
      records = await mapConcurrent(records, LIST_FETCH_CONCURRENCY, (r) => this.#recordByFacts(r));
    }
    return records;
  }

  /** Every recorded version of one source's relative path, newest first. */
  async history(source: string, path: string, limit = 100): Promise<FileRecord[]> {
    return this.list({ source, path, limit });
  }

  /** Live updates (state changes and byte progress) of one file or of all; close() ends it. */
  watch(filter: WatchFilter = {}): StatusWatch {
    const watch = new StatusWatch(
      this.#nc,
      this.#js,
      this.names,
      filter,
      (id) => this.get(id),
      (id) => this.#scan(entryFilterSubject(this.names.statusPrefix, { id })),
      this.#groups,
      () => this.#watches.delete(watch),
    );
    this.#watches.add(watch);
    return watch;
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const w of this.#watches) w.close();
    this.#watches.clear();
    this.#lastProgress.clear();
    return Promise.resolve();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #fold(entries: readonly StatusEntry[]): FileRecord[] {
    const out: FileRecord[] = [];
    for (const list of groupById(entries).values()) {
      const r = foldRecord(list, this.#groups);
      if (r) out.push(r);
    }
    return out;
  }

  async #newest(limit: number, matches: (r: FileRecord) => boolean): Promise<FileRecord[]> {
    let info;
    try {
      info = await this.#jsm.streams.info(this.names.statusStream);
    } catch (err) {
      if (isStreamNotFound(err)) return [];
      throw err;
    }
    const { first_seq: first, last_seq: last } = info.state;
    if (info.state.messages === 0) return [];
    // About four entries a file (source + groups + in-progress); start with twice that.
    let window = Math.max(64, limit * 8);
    for (;;) {
      const start = Math.max(first, last - window + 1);
      const entries = await this.#scan(entryFilterSubject(this.names.statusPrefix, {}), undefined, start);
      const records = this.#fold(entries).filter(matches);
      if (records.length >= limit || start <= first) return records;
      window *= 4;
    }
  }

  /** An entry published without a reply: no PubAck round trip (a missing stream drops it). */
  #send(entry: StatusEntry, who: string): void {
    if (this.#closed || this.#nc.isClosed()) return;
    try {
      this.#nc.publish(entrySubject(this.names.statusPrefix, entryKey(entry, who)), JSON.stringify(entry));
    } catch (err) {
      this.#log.warn({ fileId: entry.id, err: describeError(err) }, "status ledger entry not sent");
    }
  }

  async #write(entry: StatusEntry, who: string, supersede: boolean): Promise<void> {
    if (this.#closed) return;
    if (Date.now() < this.#absentUntil) return;
    const key = entryKey(entry, who);
    const issue = isIssue(entry.state);
    const body = JSON.stringify(entry);
    try {
      await this.#js.publish(entrySubject(this.names.statusPrefix, key), body);
    } catch (err) {
      if (isNoLedger(err)) {
        this.#absentUntil = Date.now() + ABSENT_RETRY_MS;
        this.#log.info(
          { stream: this.names.statusStream },
          "no status ledger stream: file states are not recorded (STATUS=off where it is provisioned?)",
        );
        return;
      }
      throw new NatsError("STATUS_WRITE_FAILED", `status ledger: recording ${entry.id} as ${entry.state} failed`, {
        cause: err,
      });
    }
    try {
      // Failures also go to the small index that `list --state failed|error` reads.
      if (issue) await this.#js.publish(entrySubject(this.names.issuesPrefix, key), body);
      if (supersede) {
        await this.#jsm.streams.purge(this.names.statusStream, {
          filter: entriesOfWho(this.names.statusPrefix, entry.id, who),
          keep: 1,
        });
        // A failure this writer recorded before is no longer one (a replayed dead letter delivered).
        await this.#jsm.streams.purge(this.names.issuesStream, {
          filter: entriesOfWho(this.names.issuesPrefix, entry.id, who),
          ...(issue ? { keep: 1 } : {}),
        });
      }
    } catch (err) {
      throw new NatsError("STATUS_WRITE_FAILED", `status ledger: indexing ${entry.id} as ${entry.state} failed`, {
        cause: err,
      });
    }
  }

  /**
   * The whole record of a file whose facts (source, path, job, parent) are
   * known: each of its possible entries is read by its exact subject (a
   * direct read, however large the ledger), not found by a filter.
   */
  async #recordByFacts(partial: FileRecord): Promise<FileRecord> {
    const subject = (who: string, state: string) =>
      entrySubject(this.names.statusPrefix, {
        id: partial.id,
        who,
        state,
        source: partial.source,
        path: partial.subject,
        jobId: partial.jobId,
        parentId: partial.parentId,
      });
    const sources = await Promise.all(SOURCE_STATES.map((st) => this.#lastOn(subject(SOURCE_WHO, st))));
    const groups = new Set([...this.#groups, ...Object.keys(partial.deliveries)]);
    for (const e of sources) if (e?.entry.kind === "source") for (const g of e.entry.groups) groups.add(g);
    const deliveries = await Promise.all(
      [...groups].flatMap((g) => DELIVERY_STATES.map((st) => this.#lastOn(subject(groupWho(g), st)))),
    );
    const found = [...sources, ...deliveries]
      .filter((e): e is { seq: number; entry: StatusEntry } => e !== undefined)
      .sort((a, b) => a.seq - b.seq)
      .map((e) => e.entry);
    return foldRecord(found, this.#groups) ?? partial;
  }

  async #lastOn(subject: string): Promise<{ seq: number; entry: StatusEntry } | undefined> {
    let m;
    try {
      m = await this.#jsm.streams.getMessage(this.names.statusStream, { last_by_subj: subject });
    } catch (err) {
      if (/no message found|not found/i.test(describeError(err))) return undefined;
      throw err;
    }
    if (!m) return undefined;
    const entry = parseEntry(m.data);
    return entry ? { seq: m.seq, entry } : undefined;
  }

  /** Whether the ledger stream exists (a reader's scans would otherwise retry against nothing). */
  async #exists(stream: string): Promise<boolean> {
    if (this.#present.has(stream)) return true;
    try {
      await this.#jsm.streams.info(stream);
      this.#present.add(stream);
      return true;
    } catch (err) {
      if (isStreamNotFound(err)) return false;
      throw err;
    }
  }

  async #scan(
    subject: string,
    since?: Date,
    startSeq?: number,
    stream = this.names.statusStream,
  ): Promise<StatusEntry[]> {
    if (!(await this.#exists(stream))) return [];
    const start =
      startSeq !== undefined
        ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: startSeq }
        : since
          ? { deliver_policy: DeliverPolicy.StartTime, opt_start_time: since.toISOString() }
          : {};
    const reader = new OrderedChunkReader(
      this.#nc,
      this.#jsm,
      stream,
      subject,
      SCAN_BATCH,
      SCAN_STALL_MS,
      new AbortController().signal,
      start,
    );
    const out: StatusEntry[] = [];
    try {
      for await (const m of reader.messages()) {
        const e = parseEntry(m.data);
        if (e) out.push(e);
        if (m.info.pending === 0) break;
      }
    } finally {
      reader.close();
    }
    return out;
  }
}

/** Opens the status ledger of a deployment (see StatusLedger). */
export function openStatusLedger(nc: NatsConnection, options: StatusLedgerOptions): Promise<StatusLedger> {
  return StatusLedger.open(nc, options);
}

/** The common variables a service's ledger follows. */
export interface LedgerConfig {
  STATUS: boolean;
  STATUS_MAX_AGE: number;
  STREAM: string;
  STREAM_REPLICAS: number;
}

/** A service's ledger as its configuration asks (provisioned), or undefined with STATUS=off. */
export async function openServiceLedger(
  nc: NatsConnection,
  config: LedgerConfig,
  by: string,
  log: Logger,
  sinkGroups: readonly string[] = [],
): Promise<StatusLedger | undefined> {
  if (!config.STATUS) return undefined;
  return StatusLedger.open(nc, {
    stream: config.STREAM,
    by,
    maxAgeMs: config.STATUS_MAX_AGE,
    replicas: config.STREAM_REPLICAS,
    sinkGroups,
    log,
  });
}

/**
 * Creates `<STREAM>_STATUS` or brings an existing one to the wanted max age
 * and replicas. One message per subject: an entry rewritten (a redelivery
 * recording `delivered` again) replaces the earlier copy.
 */
export async function provisionStatusStream(
  jsm: JetStreamManager,
  names: JetStreamNames,
  options: { maxAgeMs: number; replicas: number; log: Logger },
): Promise<void> {
  const streams = [
    { name: names.statusStream, prefix: names.statusPrefix, what: "one entry per file version and writer" },
    { name: names.issuesStream, prefix: names.issuesPrefix, what: "copies of failed and error entries (an index)" },
  ];
  for (const { name, prefix, what } of streams) {
    const wanted = {
      name,
      subjects: [`${prefix}.>`],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
      num_replicas: options.replicas,
      max_age: options.maxAgeMs * NS_PER_MS,
      max_msgs_per_subject: 1,
      allow_direct: true,
      description: `filerelay status ledger: ${what}`,
    };
    try {
      const info = await jsm.streams.info(name);
      const c = info.config;
      if (c.max_age !== wanted.max_age || c.num_replicas !== wanted.num_replicas) {
        await jsm.streams.update(name, { ...c, max_age: wanted.max_age, num_replicas: options.replicas });
        options.log.info(
          { change: `updated stream ${name}: max_age ${options.maxAgeMs} ms, replicas ${options.replicas}` },
          "provisioned",
        );
      }
    } catch (err) {
      if (!isStreamNotFound(err)) throw err;
      try {
        await jsm.streams.add(wanted);
        options.log.info({ change: `created stream ${name} (${wanted.subjects[0]})` }, "provisioned");
      } catch (addErr) {
        // Another replica starting at the same moment created it first: that is the wanted state.
        await jsm.streams.info(name).catch(() => {
          throw addErr;
        });
      }
    }
  }
}

function factsOf(f: Envelope | SourceFacts): FileFacts {
  if ("payload" in f) {
    const ext = f.extensions;
    return {
      id: f.id,
      source: f.source,
      subject: f.subject,
      filename: f.filename,
      size: f.size,
      sha256: f.sha256 || null,
      contentType: f.contentType,
      jobId: ext?.jobid ?? null,
      parentId: ext?.parentid ?? null,
    };
  }
  const slash = f.subject.lastIndexOf("/");
  return {
    id: f.id,
    source: f.source,
    subject: f.subject,
    filename: f.filename ?? f.subject.slice(slash + 1),
    size: f.size,
    sha256: f.sha256,
    contentType: f.contentType ?? null,
    jobId: f.jobId,
    parentId: f.parentId,
  };
}

function entryKey(entry: StatusEntry, who: string): EntryKey {
  return {
    id: entry.id,
    who,
    state: entry.state,
    source: entry.source,
    path: entry.subject,
    jobId: entry.jobId,
    parentId: entry.parentId,
  };
}

const SOURCE_STATES = ["received", "published", "error"] as const;
const DELIVERY_STATES = ["in_progress", "delivered", "failed"] as const;

/** States indexed in the issues stream. */
function isIssue(state: string): boolean {
  return state === "failed" || state === "error";
}

/** No stream captures the ledger's subjects: the publish finds no responder. */
function isNoLedger(err: unknown): boolean {
  const text = describeError(err);
  return /no responders|503/i.test(text);
}

async function mapConcurrent<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

export type { StatusUpdate, WatchFilter };

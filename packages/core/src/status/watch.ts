import { DeliverPolicy, type ConsumerMessages, type JetStreamClient } from "@nats-io/jetstream";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { describeError } from "../errors.js";
import type { JetStreamNames } from "../names.js";
import { foldRecord, parseEntry, type FileRecord, type FileState, type StatusEntry } from "./record.js";
import { subjectToken } from "./subjects.js";

export interface WatchFilter {
  /** One file version; unset: every file. */
  id?: string | undefined;
}

/** One live update: a state change (a new ledger entry) or byte progress. */
export interface StatusUpdate {
  id: string;
  kind: "state" | "progress";
  state: FileState;
  bytes: number;
  total: number | null;
  /** bytes / total, or null while the total is unknown. */
  progress: number | null;
  /** The group whose delivery moved (progress of a sink's write, or its entry). */
  group?: string;
  /** The record after a state change. */
  record?: FileRecord;
}

interface ProgressMessage {
  id: string;
  bytes: number;
  total: number | null;
  group?: string;
}

/** Files a watch of every file remembers at once (their entries, to fold states). */
const MAX_TRACKED = 10_000;

/**
 * Live updates from the ledger: new entries (an ordered consumer from now
 * on) and byte progress (plain NATS). For one file, the current state comes
 * first. Entries of files seen during the watch are kept to fold each new
 * one into a record; the oldest are forgotten past MAX_TRACKED.
 */
export class StatusWatch implements AsyncIterable<StatusUpdate> {
  readonly #queue: StatusUpdate[] = [];
  #wake: (() => void) | undefined;
  #closed = false;
  #failure: unknown;
  readonly #entries = new Map<string, StatusEntry[]>();
  readonly #states = new Map<string, FileState>();
  #sub: Subscription | undefined;
  #messages: ConsumerMessages | undefined;
  #listening!: () => void;
  /** Resolves once the watch receives what is written from now on (also when it failed to start). */
  readonly listening: Promise<void> = new Promise((resolve) => (this.#listening = resolve));

  constructor(
    private readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly names: JetStreamNames,
    private readonly filter: WatchFilter,
    private readonly get: (id: string) => Promise<FileRecord | undefined>,
    /** The entries the ledger holds for a file, in stream order. */
    private readonly entriesOf: (id: string) => Promise<StatusEntry[]>,
    private readonly groups: readonly string[],
    private readonly onClose: () => void,
  ) {
    this.#start().catch((err: unknown) => {
      this.#failure = err;
      this.#listening();
      this.#notify();
    });
  }

  async #start(): Promise<void> {
    const id = this.filter.id;
    this.#sub = this.nc.subscribe(`${this.names.progressPrefix}.${id ?? "*"}`, {
      callback: (err, msg) => {
        if (err || this.#closed) return;
        try {
          this.#onProgress(msg.json<ProgressMessage>());
        } catch {
          // A foreign message on the progress subject.
        }
      },
    });
    const consumer = await this.js.consumers.get(this.names.statusStream, {
      filter_subjects: `${this.names.statusPrefix}.${id === undefined ? "*" : subjectToken(id)}.>`,
      deliver_policy: DeliverPolicy.New,
    });
    this.#messages = await consumer.consume();
    this.#listening();
    if (id !== undefined) {
      // After the consumer exists, so nothing written in between is missed (a repeat is harmless).
      const record = await this.get(id);
      if (record) this.#onRecord(record);
    }
    for await (const m of this.#messages) {
      if (this.#closed) break;
      const entry = parseEntry(m.data);
      if (entry) await this.#onEntry(entry);
    }
  }

  async #onEntry(entry: StatusEntry): Promise<void> {
    let known = this.#entries.get(entry.id);
    if (!known) {
      // A file first seen mid-way (a sink's entry): fetch what the ledger already holds.
      const fresh = entry.kind === "source" && entry.state === "received";
      known = fresh ? [] : await this.entriesOf(entry.id);
      this.#remember(entry.id, known);
    }
    const who = (e: StatusEntry) => (e.kind === "source" ? "" : e.group);
    const kept = known.filter((e) => who(e) !== who(entry));
    kept.push(entry);
    this.#entries.set(entry.id, kept);
    const record = foldRecord(kept, this.groups);
    if (record) this.#onRecord(record, entry.kind === "group" ? entry.group : undefined);
  }

  #remember(id: string, entries: StatusEntry[]): void {
    this.#entries.set(id, entries);
    if (this.#entries.size > MAX_TRACKED) {
      const oldest = this.#entries.keys().next().value;
      if (oldest !== undefined) {
        this.#entries.delete(oldest);
        this.#states.delete(oldest);
      }
    }
  }

  #onRecord(record: FileRecord, group?: string): void {
    this.#states.set(record.id, record.state);
    const total = record.size;
    const bytes = record.progress.bytes;
    this.#push({
      id: record.id,
      kind: "state",
      state: record.state,
      bytes,
      total,
      progress: total ? Math.min(1, bytes / total) : total === 0 ? 1 : null,
      ...(group ? { group } : {}),
      record,
    });
  }

  #onProgress(p: ProgressMessage): void {
    if (typeof p.id !== "string" || typeof p.bytes !== "number") return;
    const total = typeof p.total === "number" ? p.total : null;
    this.#push({
      id: p.id,
      kind: "progress",
      state: this.#states.get(p.id) ?? (p.group ? "published" : "received"),
      bytes: p.bytes,
      total,
      progress: total ? Math.min(1, p.bytes / total) : null,
      ...(p.group ? { group: p.group } : {}),
    });
  }

  #push(u: StatusUpdate): void {
    if (this.#closed) return;
    this.#queue.push(u);
    this.#notify();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<StatusUpdate> {
    for (;;) {
      const next = this.#queue.shift();
      if (next) {
        yield next;
        continue;
      }
      if (this.#failure !== undefined) {
        throw this.#failure instanceof Error ? this.#failure : new Error(describeError(this.#failure));
      }
      if (this.#closed) return;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#sub?.unsubscribe();
    this.#messages?.stop();
    this.onClose();
    this.#notify();
  }
}

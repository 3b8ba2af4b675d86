import { Kvm, type KV } from "@nats-io/kv";
import { StorageType } from "@nats-io/jetstream";
import type { NatsConnection } from "@filerelay/core";
import type { Runs } from "./window.js";
import type { RotationReason } from "./rotation.js";

/**
 * The record that makes a crash harmless. Before a window's batches are
 * published, the window is written down (its stream sequences and the name
 * and ce-id of each batch); after the last PubAck it is marked published, and
 * only then are its events acknowledged. A restart finds:
 * - `pending`: the batches may or may not have been published. They are
 *   rebuilt from exactly those sequences (still in the stream, since none was
 *   acknowledged) and published again under the same ce-id and name, which
 *   JetStream's duplicate window drops if the first publish had landed;
 * - `published`: its events' redeliveries are acknowledged without a second file.
 * Published records are kept a while after the acks (a lost ack is
 * redelivered after ack_wait and must still be recognised), then deleted.
 */

export interface BatchRecord {
  key: string | undefined;
  id: string;
  name: string;
  raw: boolean;
  events: number;
  bytes: number;
}

export interface WindowIntent {
  v: 1;
  state: "pending" | "published";
  closedAt: string;
  reason: RotationReason;
  runs: Runs;
  batches: BatchRecord[];
  /** When the record may be deleted (published records only), ms since the epoch. */
  expiresAt?: number;
}

export function intentBucketName(eventsStream: string, group: string): string {
  return `${eventsStream}_${group}_batches`;
}

/** A sortable KV key per window: close time, then the first sequence. */
export function intentKey(closedAt: Date, runs: Runs): string {
  return `w.${String(closedAt.getTime()).padStart(15, "0")}.${runs[0]?.[0] ?? 0}`;
}

export class IntentStore {
  private constructor(private readonly kv: KV) {}

  static async open(nc: NatsConnection, bucket: string, replicas: number): Promise<IntentStore> {
    const kvm = new Kvm(nc);
    const kv = await kvm.create(bucket, {
      history: 1,
      storage: StorageType.File,
      replicas,
      description: "filerelay batcher: windows being published",
    });
    return new IntentStore(kv);
  }

  async put(key: string, intent: WindowIntent): Promise<void> {
    await this.kv.put(key, JSON.stringify(intent));
  }

  async delete(key: string): Promise<void> {
    await this.kv.delete(key);
  }

  /** Every recorded window, oldest first. */
  async list(): Promise<{ key: string; intent: WindowIntent }[]> {
    const keys: string[] = [];
    for await (const k of await this.kv.keys()) keys.push(k);
    keys.sort();
    const out: { key: string; intent: WindowIntent }[] = [];
    for (const key of keys) {
      const entry = await this.kv.get(key);
      if (!entry || entry.operation !== "PUT" || entry.value.length === 0) continue;
      out.push({ key, intent: JSON.parse(entry.string()) as WindowIntent });
    }
    return out;
  }
}

/** Stream sequences some published window holds, until its record expires. */
export class OwnedSequences {
  private readonly windows = new Map<string, { runs: Runs; expiresAt: number }>();
  /** The highest sequence held: new events lie above it, so most look-ups stop here. */
  private max = 0;

  add(key: string, runs: Runs, expiresAt: number): void {
    this.windows.set(key, { runs, expiresAt });
    for (const [, to] of runs) if (to > this.max) this.max = to;
  }

  has(seq: number): boolean {
    if (seq > this.max) return false;
    for (const w of this.windows.values()) {
      for (const [from, to] of w.runs) if (seq >= from && seq <= to) return true;
    }
    return false;
  }

  /** Forgets expired windows and returns their keys (for deleting their records). */
  expire(now: number): string[] {
    const gone: string[] = [];
    for (const [key, w] of this.windows) {
      if (w.expiresAt <= now) {
        this.windows.delete(key);
        gone.push(key);
      }
    }
    return gone;
  }
}

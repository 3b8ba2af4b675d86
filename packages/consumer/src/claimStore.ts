import { hostname } from "node:os";
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@filerelay/core";

/** Who holds a claim: enough to tell a live replica from a crashed one on this host. */
export interface ClaimOwner {
  instance: string;
  host: string;
  pid: number;
}

/** A publish claim held by this process. */
export interface Claim {
  key: string;
  revision: number;
}

export function isWrongLastSequence(err: unknown): boolean {
  return (
    err instanceof JetStreamApiError &&
    (err.code === JetStreamApiCodes.StreamWrongLastSequence ||
      err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Short-lived, atomic publish claims in the claims KV bucket (keyed by file
 * fingerprint), so two replicas on one directory never both publish one file
 * version. `kv.create` succeeds for exactly one of them. A claim of a crashed
 * replica disappears with the bucket's max age (CLAIM_TTL_MS), or at once when
 * it was held by a dead process on this same host (a restart).
 */
export class ClaimStore {
  readonly #kv: KV;
  readonly owner: ClaimOwner;
  readonly #value: string;
  /** The bucket's max age: how long an unrefreshed claim lives. */
  readonly ttlMs: number;

  private constructor(kv: KV, owner: ClaimOwner, ttlMs: number) {
    this.#kv = kv;
    this.owner = owner;
    this.ttlMs = ttlMs;
    this.#value = JSON.stringify(owner);
  }

  static async open(nc: NatsConnection, bucket: string, instance: string): Promise<ClaimStore> {
    const kv = await new Kvm(nc).open(bucket, { allow_direct: true });
    const status = await kv.status();
    // A bucket without max age would keep a crashed replica's claims forever; refresh as if 2 min.
    return new ClaimStore(kv, { instance, host: hostname(), pid: process.pid }, status.ttl || 120_000);
  }

  /** The claim, or null when a live replica holds it. */
  async acquire(key: string): Promise<Claim | null> {
    try {
      return { key, revision: await this.#kv.create(key, this.#value) };
    } catch (err) {
      if (!isWrongLastSequence(err)) throw err;
    }
    const entry = await this.#kv.get(key);
    if (!entry || entry.operation !== "PUT") {
      // Expired or released in between: one more try, then leave it to the next round.
      try {
        return { key, revision: await this.#kv.create(key, this.#value) };
      } catch (err) {
        if (isWrongLastSequence(err)) return null;
        throw err;
      }
    }
    let holder: Partial<ClaimOwner> = {};
    try {
      holder = entry.json<Partial<ClaimOwner>>();
    } catch {
      /* unreadable: treat as foreign */
    }
    // Our own (a release that did not land): take it back.
    const ours = holder.instance === this.owner.instance;
    const deadHereBefore =
      holder.host === this.owner.host &&
      holder.instance !== this.owner.instance &&
      typeof holder.pid === "number" &&
      holder.pid !== process.pid &&
      !pidAlive(holder.pid);
    if (!ours && !deadHereBefore) return null;
    try {
      return { key, revision: await this.#kv.update(key, this.#value, entry.revision) };
    } catch (err) {
      if (isWrongLastSequence(err)) return null;
      throw err;
    }
  }

  /** Extends a claim during a long upload; false when it was lost (expired and taken). */
  async refresh(claim: Claim): Promise<boolean> {
    try {
      claim.revision = await this.#kv.update(claim.key, this.#value, claim.revision);
      return true;
    } catch (err) {
      if (isWrongLastSequence(err)) return false;
      throw err;
    }
  }

  /** Gives a claim up (best effort: it expires anyway). */
  async release(claim: Claim): Promise<void> {
    await this.#kv.delete(claim.key, { previousSeq: claim.revision }).catch(() => undefined);
  }
}

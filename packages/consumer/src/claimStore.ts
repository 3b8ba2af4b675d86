import { hostname } from "node:os";
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@filerelay/core";

/** Who holds a claim (host and pid are for people reading the bucket; liveness is the instance's heartbeat). */
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

/** Heartbeat keys live beside the claims (which are hex fingerprints). */
const HEARTBEAT_PREFIX = "instance.";
/** Longest interval between heartbeats (shorter with a short CLAIM_TTL_MS). */
const MAX_HEARTBEAT_MS = 2000;
/** A holder whose heartbeat is this many intervals older than ours is dead. */
const STALE_HEARTBEATS = 4;

/**
 * Short-lived, atomic publish claims in the claims KV bucket (keyed by file
 * fingerprint), so two replicas on one directory never both publish one file
 * version. `kv.create` succeeds for exactly one of them. A claim of a crashed
 * replica disappears with the bucket's max age (CLAIM_TTL_MS), or sooner when
 * its holder's heartbeat has stopped: each process writes `instance.<random
 * id>` every few seconds, and a holder whose last heartbeat is several
 * intervals older than ours (both stamped by the broker's clock, so host
 * clocks do not matter) or gone (a clean stop deletes it) is dead. Unlike a
 * pid check, this cannot mistake a live process in another container or pod
 * that shares the host name for a dead one, nor miss a restart under a new
 * host name.
 */
export class ClaimStore implements AsyncDisposable {
  readonly #kv: KV;
  readonly owner: ClaimOwner;
  readonly #value: string;
  /** The bucket's max age: how long an unrefreshed claim lives. */
  readonly ttlMs: number;
  readonly #heartbeatMs: number;
  #heartbeat: NodeJS.Timeout | undefined;

  private constructor(kv: KV, owner: ClaimOwner, ttlMs: number) {
    this.#kv = kv;
    this.owner = owner;
    this.ttlMs = ttlMs;
    this.#value = JSON.stringify(owner);
    this.#heartbeatMs = Math.max(250, Math.min(MAX_HEARTBEAT_MS, Math.floor(ttlMs / 4)));
  }

  static async open(nc: NatsConnection, bucket: string, instance: string): Promise<ClaimStore> {
    const kv = await new Kvm(nc).open(bucket, { allow_direct: true });
    const status = await kv.status();
    // A bucket without max age would keep a crashed replica's claims forever; refresh as if 2 min.
    const store = new ClaimStore(kv, { instance, host: hostname(), pid: process.pid }, status.ttl || 120_000);
    await store.#beat();
    store.#heartbeat = setInterval(() => {
      // A missed beat is retried at the next tick; it takes several to look dead.
      store.#beat().catch(() => undefined);
    }, store.#heartbeatMs);
    store.#heartbeat.unref();
    return store;
  }

  async #beat(): Promise<void> {
    await this.#kv.put(`${HEARTBEAT_PREFIX}${this.owner.instance}`, this.#value);
  }

  /** Is the process holding a claim gone (heartbeat stopped or deleted)? */
  async #holderDead(instance: string | undefined): Promise<boolean> {
    // Unreadable holder: only the claim's expiry can tell.
    if (typeof instance !== "string" || instance === "") return false;
    const [theirs, mine] = await Promise.all([
      this.#kv.get(`${HEARTBEAT_PREFIX}${instance}`),
      this.#kv.get(`${HEARTBEAT_PREFIX}${this.owner.instance}`),
    ]);
    if (!theirs || theirs.operation !== "PUT") return true;
    // Without our own stamp there is no clock to compare with: wait.
    if (!mine || mine.operation !== "PUT") return false;
    return mine.created.getTime() - theirs.created.getTime() > STALE_HEARTBEATS * this.#heartbeatMs;
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
    if (!ours && !(await this.#holderDead(holder.instance))) return null;
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

  /** Stops the heartbeat and deletes it, so this process's remaining claims can be taken at once. */
  async close(): Promise<void> {
    clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
    await this.#kv.delete(`${HEARTBEAT_PREFIX}${this.owner.instance}`).catch(() => undefined);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";

/**
 * A lease on a KV key, so that of N replicas one does a periodic job per
 * period. The value says who holds it and until when; taking it over is a
 * revision-checked write, so of two replicas racing for an expired lease one
 * wins. A crashed holder's lease simply runs out. Holders never give a lease
 * back: the job runs at most once per lease duration across all replicas.
 * A long-running holder (one replica doing the work, others standing by)
 * renews it and may release it on a clean stop.
 */

export interface LeaseValue {
  holder: string;
  /** Epoch ms when the lease runs out. */
  until: number;
}

export type LeaseDecision =
  { action: "create" } | { action: "take"; revision: number } | { action: "wait"; holder: string; until: number };

/** What a would-be holder does, given the key's current entry (null when absent or deleted). */
export function leaseDecision(current: { value: string; revision: number } | null, now: number): LeaseDecision {
  if (!current) return { action: "create" };
  let lease: Partial<LeaseValue> = {};
  try {
    lease = JSON.parse(current.value) as Partial<LeaseValue>;
  } catch {
    // Unreadable: treated as run out, and overwritten.
  }
  if (typeof lease.until === "number" && typeof lease.holder === "string" && lease.until > now) {
    return { action: "wait", holder: lease.holder, until: lease.until };
  }
  return { action: "take", revision: current.revision };
}

export interface Lease {
  /** Takes the lease for `durationMs` when it is free or has run out; false when another holds it. */
  tryAcquire(): Promise<boolean>;
  /**
   * Extends a lease this process holds: false when it was lost meanwhile
   * (another write came first); throws on a transient error, still holding it.
   */
  renew(): Promise<boolean>;
  /** Gives a held lease back at once (best effort), so a waiting replica need not wait for it to run out. */
  release(): Promise<void>;
  /** The lease as stored now (null when nobody holds or ever held it), e.g. to say who holds it. */
  read(): Promise<LeaseValue | null>;
}

/** Did a revision-checked write fail because the key had moved on? */
function isWrongRevision(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamWrongLastSequence;
}

export function createLease(
  nc: NatsConnection,
  opts: { bucket: string; key: string; holder: string; durationMs: number },
): Lease {
  let kvP: Promise<KV> | undefined;
  const kv = () =>
    (kvP ??= new Kvm(nc).open(opts.bucket).catch((err: unknown) => {
      kvP = undefined;
      throw err;
    }));
  let held: number | undefined;
  const value = () => JSON.stringify({ holder: opts.holder, until: Date.now() + opts.durationMs } satisfies LeaseValue);

  return {
    async tryAcquire() {
      const store = await kv();
      const entry = await store.get(opts.key);
      const current = entry && entry.operation === "PUT" ? { value: entry.string(), revision: entry.revision } : null;
      const decision = leaseDecision(current, Date.now());
      try {
        if (decision.action === "create") held = await store.create(opts.key, value());
        else if (decision.action === "take") held = await store.update(opts.key, value(), decision.revision);
        else return false;
        return true;
      } catch {
        // Another replica wrote first.
        held = undefined;
        return false;
      }
    },
    async renew() {
      if (held === undefined) return false;
      try {
        held = await (await kv()).update(opts.key, value(), held);
        return true;
      } catch (err) {
        if (!isWrongRevision(err)) throw err;
        held = undefined;
        return false;
      }
    },
    async release() {
      if (held === undefined) return;
      const revision = held;
      held = undefined;
      // At the held revision, so a lease another replica has taken meanwhile stays.
      await (await kv()).delete(opts.key, { previousSeq: revision }).catch(() => undefined);
    },
    async read() {
      const entry = await (await kv()).get(opts.key);
      if (!entry || entry.operation !== "PUT") return null;
      try {
        const lease = JSON.parse(entry.string()) as Partial<LeaseValue>;
        return typeof lease.holder === "string" && typeof lease.until === "number"
          ? { holder: lease.holder, until: lease.until }
          : null;
      } catch {
        return null;
      }
    },
  };
}

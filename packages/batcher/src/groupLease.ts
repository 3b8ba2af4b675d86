import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import {
  createLease,
  describeError,
  FilerelayError,
  leaseBucketName,
  type Lease,
  type Logger,
  type NatsConnection,
} from "@filerelay/core/internal";

/**
 * One batcher per BATCH_GROUP works at a time: two would each take part of
 * the group's events into windows of their own, interleaving batch files and
 * their names. The worker holds a KV lease (core's lease, in `<STREAM>_leases`)
 * and renews it; another replica of the group waits, not ready, until the lease
 * is released (clean stop) or runs out (a killed holder). A holder that cannot
 * renew in time stops trusting its lease before anyone else may take it.
 */

export class LeaseLostError extends FilerelayError {
  override name = "LeaseLostError";
}

/** Until when a holder may trust a lease whose last write was sent at `sentAt`: a margin before it runs out. */
export function leaseTrustedUntil(sentAt: number, durationMs: number): number {
  return sentAt + durationMs - Math.max(250, Math.floor(durationMs / 5));
}

/** How often a holder renews (and a waiting replica retries): three times per lease. */
export function leaseRenewEveryMs(durationMs: number): number {
  return Math.max(100, Math.floor(durationMs / 3));
}

export function groupLeaseKey(eventsStream: string, group: string): string {
  return `batcher.${eventsStream}.${group}`;
}

export interface GroupLease extends AsyncDisposable {
  readonly holder: string;
  /** Waits, logging who holds it, until this process holds the lease; false when `signal` aborts first. */
  acquire(signal: AbortSignal): Promise<boolean>;
  /** True while the lease is held and recently renewed. */
  held(): boolean;
  /** Rejects with a LeaseLostError once the lease is lost or not renewed in time (after acquire()). */
  readonly lost: Promise<never>;
  /** Stops renewing and gives the lease back (best effort). */
  close(): Promise<void>;
}

export function startGroupLease(
  nc: NatsConnection,
  opts: { stream: string; eventsStream: string; group: string; durationMs: number; log: Logger },
): GroupLease {
  const { durationMs, log } = opts;
  const holder = `${hostname()}/${process.pid}/${randomUUID().slice(0, 8)}`;
  const key = groupLeaseKey(opts.eventsStream, opts.group);
  const lease: Lease = createLease(nc, { bucket: leaseBucketName(opts.stream), key, holder, durationMs });
  const every = leaseRenewEveryMs(durationMs);
  let trustedUntil = 0;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  let fail!: (err: Error) => void;
  const lost = new Promise<never>((_, reject) => (fail = reject));
  // Nobody may await `lost` before acquire(); an unobserved rejection must not crash the process.
  lost.catch(() => undefined);

  let lastSent = 0;
  const watch = () => {
    let renewing = false;
    // Checked more often than renewed, so a stalled renewal is noticed before the margin is used up.
    timer = setInterval(
      () => {
        const now = Date.now();
        if (now >= trustedUntil) {
          stop();
          fail(new LeaseLostError("LEASE_LOST", `the lease of group ${opts.group} was not renewed in time`));
          return;
        }
        if (renewing || now - lastSent < every) return;
        renewing = true;
        lastSent = now;
        lease
          .renew()
          .then((ok) => {
            if (ok) trustedUntil = Math.max(trustedUntil, leaseTrustedUntil(now, durationMs));
            else if (timer) {
              stop();
              fail(new LeaseLostError("LEASE_LOST", `another replica took the lease of group ${opts.group}`));
            }
          })
          .catch((err: unknown) => {
            log.warn({ err: describeError(err), trustedForMs: trustedUntil - Date.now() }, "could not renew the lease");
          })
          .finally(() => (renewing = false));
      },
      Math.max(50, Math.floor(every / 4)),
    );
  };
  const stop = () => {
    if (timer) clearInterval(timer);
    timer = undefined;
  };

  const close = async () => {
    if (closed) return;
    closed = true;
    stop();
    await lease.release();
  };

  return {
    holder,
    async acquire(signal) {
      let logged: string | undefined;
      let wait: number;
      while (!signal.aborted && !closed) {
        const sentAt = Date.now();
        try {
          if (await lease.tryAcquire()) {
            trustedUntil = leaseTrustedUntil(sentAt, durationMs);
            lastSent = sentAt;
            log.info({ group: opts.group, holder, leaseMs: durationMs }, "holding the lease of the batch group");
            watch();
            return true;
          }
          const current = await lease.read();
          if (current && current.holder !== logged) {
            logged = current.holder;
            log.info(
              { group: opts.group, holder: current.holder, until: new Date(current.until).toISOString() },
              "another replica holds the lease of this batch group; waiting (not ready) until it is free",
            );
          }
          // Back right after the holder's lease runs out, or sooner if it is given back.
          wait = current ? Math.min(every, Math.max(50, current.until - Date.now() + 50)) : 50;
        } catch (err) {
          log.warn({ err: describeError(err) }, "could not read the lease of the batch group; retrying");
          wait = every;
        }
        await sleep(wait, undefined, { signal }).catch(() => undefined);
      }
      return false;
    },
    held: () => timer !== undefined && Date.now() < trustedUntil,
    lost,
    close,
    [Symbol.asyncDispose]: close,
  };
}

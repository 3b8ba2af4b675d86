import { setTimeout as sleep } from "node:timers/promises";
import type { JsMsg } from "@nats-io/jetstream";
import { backoffDelay } from "../backoff.js";
import { describeError } from "../errors.js";
import type { Logger } from "../logger.js";
import { isConsumerGone, type GroupDurable } from "./group.js";
import type { InFlightSet } from "./inflight.js";

/** Longest a free slot waits for others to free up so that they are filled by one pull. */
const PULL_GATHER_MS = 5;
/** Retry delays after failed pulls: 250 ms doubling up to 8 s. */
const PULL_RETRY = { baseMs: 250, maxMs: 8000 } as const;

export interface PullLoopOptions {
  group: GroupDurable;
  inflight: InFlightSet;
  concurrency: number;
  /** Pull request lifetime. */
  fetchExpiresMs: number;
  signal: AbortSignal;
  log: Logger;
  /** Starts handling a pulled message (it takes a slot in `inflight`). */
  start: (msg: JsMsg) => void;
}

/**
 * Pulls until `signal` aborts. A pull asks for exactly the free slots, so
 * nothing waits in a client-side buffer while its ack_wait runs out. A failed
 * pull is retried with backoff, and a durable (or stream) found gone is
 * provisioned again.
 */
export async function pullLoop(opts: PullLoopOptions): Promise<void> {
  const { group, inflight, concurrency, fetchExpiresMs, signal, log } = opts;
  // Pull batching: while handlers run, a pull waits up to PULL_GATHER_MS for
  // half the slots to be free, so that a busy sink sends one pull (a
  // subscription, a request, an unsubscribe) per few messages, not per message.
  const minBatch = Math.max(1, Math.ceil(concurrency / 2));
  let failures = 0;
  while (!signal.aborted) {
    if (inflight.size >= concurrency) {
      await inflight.slotOrTimeout();
      continue;
    }
    if (inflight.size > 0 && concurrency - inflight.size < minBatch) {
      const deadline = Date.now() + PULL_GATHER_MS;
      while (!signal.aborted && concurrency - inflight.size < minBatch && Date.now() < deadline) {
        await inflight.slotOrTimeout(deadline - Date.now());
      }
      if (signal.aborted) break;
    }
    try {
      const iter = await group.consumer.fetch({ max_messages: concurrency - inflight.size, expires: fetchExpiresMs });
      const stop = () => iter.stop();
      signal.addEventListener("abort", stop, { once: true });
      // Safety net: a pull must end by itself shortly after it expires.
      const watchdog = setTimeout(stop, fetchExpiresMs + 10_000);
      try {
        for await (const m of iter) {
          if (signal.aborted) {
            m.nak();
            continue;
          }
          opts.start(m);
        }
      } finally {
        clearTimeout(watchdog);
        signal.removeEventListener("abort", stop);
      }
      failures = 0;
    } catch (err) {
      if (signal.aborted) break;
      failures++;
      const delay = backoffDelay(failures - 1, PULL_RETRY);
      log.warn({ err: describeError(err), retryInMs: delay }, "pulling messages failed; retrying");
      await sleep(delay, undefined, { signal }).catch(() => undefined);
      if (isConsumerGone(err) && !signal.aborted) await group.reprovision();
    }
  }
}

import { setTimeout as sleep } from "node:timers/promises";

export interface BackoffPolicy {
  /** First delay (default 1000 ms). */
  baseMs?: number;
  /** Number of retries after the first attempt (default 4 → 1 s, 2 s, 4 s, 8 s). */
  retries?: number;
  factor?: number;
  /** Upper bound for any single delay. */
  maxMs?: number;
  /** 0..1: each delay is randomized by ±jitter/2 of itself (default 0). */
  jitter?: number;
}

/** The delay before retry n (0-based): base × factor^n, capped, optionally jittered. */
export function backoffDelay(n: number, policy: BackoffPolicy = {}): number {
  const { baseMs = 1000, factor = 2, maxMs = Number.POSITIVE_INFINITY, jitter = 0 } = policy;
  const raw = Math.min(baseMs * factor ** n, maxMs);
  if (jitter <= 0) return Math.round(raw);
  return Math.max(0, Math.round(raw * (1 + (Math.random() - 0.5) * jitter)));
}

/** All delays of a policy: `backoffDelays()` → [1000, 2000, 4000, 8000]. */
export function backoffDelays(policy: BackoffPolicy = {}): number[] {
  const retries = policy.retries ?? 4;
  return Array.from({ length: retries }, (_, n) => backoffDelay(n, policy));
}

export interface RetryOptions {
  signal?: AbortSignal;
  /** Return false to stop retrying (e.g. a permanent error). */
  shouldRetry?: (err: unknown, attempt: number) => boolean;
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
}

/**
 * Runs fn until it succeeds or the policy's retries are used up. Waiting is a
 * timer, so unrelated work keeps running; an abort stops the wait at once and
 * rejects with the signal's reason.
 */
export async function retry<T>(
  fn: (attempt: number) => Promise<T>,
  policy: BackoffPolicy = {},
  options: RetryOptions = {},
): Promise<T> {
  const retries = policy.retries ?? 4;
  for (let attempt = 1; ; attempt++) {
    options.signal?.throwIfAborted();
    try {
      return await fn(attempt);
    } catch (err) {
      if (attempt > retries || (options.shouldRetry && !options.shouldRetry(err, attempt))) throw err;
      const delay = backoffDelay(attempt - 1, policy);
      options.onRetry?.(err, attempt, delay);
      await sleep(delay, undefined, { signal: options.signal }).catch(() => {
        // Surface the caller's reason (e.g. "SIGTERM received"), not a generic AbortError.
        throw options.signal?.reason ?? err;
      });
    }
  }
}

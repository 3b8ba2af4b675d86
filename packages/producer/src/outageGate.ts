import { setTimeout as sleep } from "node:timers/promises";
import { SinkError } from "@filerelay/core/internal";

export interface OutageGateOptions {
  /** While closed, one delivery is let through this often to find out whether the outage is over. */
  probeIntervalMs: number;
}

/**
 * Stops the producer from pulling while its output refuses every write
 * (OUTPUT_NOT_WRITABLE): instead of each delivery failing in turn (a retry,
 * a log line and a probe per envelope in the backlog, every 30 s), handlers
 * wait at the gate, which holds the concurrency slots, so the SDK pulls
 * nothing more. Every probeIntervalMs one of them goes through as a probe;
 * its success opens the gate for all. Waiting deliveries are kept alive by
 * the SDK meanwhile.
 */
export class OutageGate {
  readonly #probeIntervalMs: number;
  #reason: string | undefined;
  #probing = false;
  #nextProbeAt = 0;
  #opened: { promise: Promise<void>; resolve: () => void } | undefined;

  constructor(options: OutageGateOptions) {
    this.#probeIntervalMs = options.probeIntervalMs;
  }

  /** Why the gate is closed, or undefined while writes go through. */
  get closedBecause(): string | undefined {
    return this.#reason;
  }

  /** A write failed because the output refuses writes: later deliveries wait. */
  close(reason: string): void {
    if (this.#reason === undefined) this.#nextProbeAt = Date.now() + this.#probeIntervalMs;
    this.#reason = reason;
    if (!this.#opened) {
      let resolve = () => {};
      const promise = new Promise<void>((r) => (resolve = r));
      this.#opened = { promise, resolve };
    }
  }

  /** A write succeeded: everyone waiting goes. */
  open(): void {
    this.#reason = undefined;
    this.#opened?.resolve();
    this.#opened = undefined;
  }

  /**
   * Resolves when this delivery may write: at once while open; while closed,
   * as the next probe (then `settle` must report how it went) or when the gate
   * opens. Throws SHUTDOWN when `signal` aborts first.
   */
  async pass(signal: AbortSignal): Promise<{ probe: boolean }> {
    while (this.#reason !== undefined) {
      signal.throwIfAborted();
      const wait = this.#nextProbeAt - Date.now();
      if (!this.#probing && wait <= 0) {
        this.#probing = true;
        return { probe: true };
      }
      const opened = this.#opened?.promise ?? Promise.resolve();
      try {
        await Promise.race([opened, sleep(Math.max(50, wait), undefined, { signal, ref: false })]);
      } catch {
        throw new SinkError("SHUTDOWN", "stopping while the output refuses writes", { cause: signal.reason });
      }
    }
    return { probe: false };
  }

  /** The probe's write is done: `ok` opens the gate, otherwise the next probe is due after the interval. */
  settle(probe: boolean, ok: boolean): void {
    if (ok) this.open();
    if (!probe) return;
    this.#probing = false;
    this.#nextProbeAt = Date.now() + this.#probeIntervalMs;
  }
}

import { setTimeout as sleep } from "node:timers/promises";
import type { JsMsg } from "@nats-io/jetstream";

const WORKING_THROTTLE_MS = 1_000;

/** A pulled message from delivery until its slot is freed. */
export interface InFlight {
  msg: JsMsg;
  /** Acked, naked or termed: nothing more may be sent for it. */
  settled: boolean;
  /** When the broker last heard from us about this message (delivery or +WPI). */
  lastWorking: number;
  abort: AbortController;
  done: Promise<void>;
  /** Frees the message's slot (idempotent): once it is acked, the slot serves the next message. */
  release: () => void;
}

/**
 * The messages being handled: their slots (a pull asks for exactly the free
 * ones), the keep-alive that holds them while handlers run, and the drain at
 * shutdown.
 */
export class InFlightSet {
  readonly #entries = new Set<InFlight>();
  /** Acked messages whose ack is still being confirmed: they hold no slot, but a shutdown waits for them. */
  readonly #confirming = new Set<Promise<void>>();
  #slotFreed: (() => void) | undefined;
  #keepAliveTimer: NodeJS.Timeout | undefined;

  constructor(signal: AbortSignal) {
    signal.addEventListener("abort", () => this.#notifySlot(), { once: true });
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Takes a slot for `msg` and runs `handle` in it; the slot is freed when `handle` ends (or releases it earlier). */
  run(msg: JsMsg, handle: (entry: InFlight) => Promise<void>, onUnexpected: (err: unknown) => void): void {
    let released = false;
    const entry: InFlight = {
      msg,
      settled: false,
      lastWorking: Date.now(),
      abort: new AbortController(),
      done: Promise.resolve(),
      release: () => {
        if (released) return;
        released = true;
        this.#entries.delete(entry);
        this.#notifySlot();
      },
    };
    this.#entries.add(entry);
    entry.done = handle(entry)
      .catch(onUnexpected)
      .finally(() => {
        entry.release();
        this.#confirming.delete(entry.done);
      });
  }

  /**
   * The message is acked: its slot serves the next message at once, while a
   * shutdown still waits for its confirmation.
   */
  confirming(entry: InFlight): void {
    this.#confirming.add(entry.done);
    entry.release();
  }

  /** Tells the broker a handler is still working on the message (throttled). */
  working(entry: InFlight): void {
    if (entry.settled || Date.now() - entry.lastWorking < WORKING_THROTTLE_MS) return;
    entry.lastWorking = Date.now();
    entry.msg.working();
  }

  /**
   * (Re)starts the keep-alive for a durable's ack_wait. One timer for every
   * in-flight message (not one per message): each tick sends +WPI for the
   * messages not heard of for a third of ack_wait.
   */
  keepAlive(ackWaitMs: number): void {
    clearInterval(this.#keepAliveTimer);
    const periodMs = Math.max(500, Math.floor(ackWaitMs / 3));
    const tick = () => {
      const now = Date.now();
      for (const entry of this.#entries) {
        if (entry.settled || now - entry.lastWorking < periodMs / 2) continue;
        entry.lastWorking = now;
        entry.msg.working();
      }
    };
    this.#keepAliveTimer = setInterval(tick, Math.max(250, Math.floor(periodMs / 2)));
    // A shorter ack_wait applies to messages already held: catch up at once.
    tick();
  }

  /** Resolves when a slot frees (or the signal aborts), or after `ms` when given. */
  slotOrTimeout(ms?: number): Promise<void> {
    return new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      this.#slotFreed = () => {
        clearTimeout(timer);
        resolve();
      };
      if (ms !== undefined) timer = setTimeout(resolve, ms);
    });
  }

  /**
   * Lets in-flight handlers finish within `timeoutMs`; then hands back what is
   * left (nak for redelivery, handler aborted), reporting each to `handedBack`.
   */
  async drain(timeoutMs: number, handedBack: (entry: InFlight) => void): Promise<void> {
    if (this.#entries.size === 0) return;
    const all = Promise.all([...this.#entries].map((e) => e.done));
    const timer = sleep(timeoutMs, "timeout" as const, { ref: false });
    if ((await Promise.race([all.then(() => "done" as const), timer])) !== "timeout") return;
    for (const entry of this.#entries) {
      if (entry.settled) continue;
      entry.settled = true;
      entry.msg.nak();
      entry.abort.abort(new Error("drain deadline passed"));
      handedBack(entry);
    }
  }

  /** Stops the keep-alive and waits for acks still being confirmed (bounded by their own timeout). */
  async close(): Promise<void> {
    clearInterval(this.#keepAliveTimer);
    await Promise.all([...this.#confirming]);
  }

  #notifySlot(): void {
    const f = this.#slotFreed;
    this.#slotFreed = undefined;
    f?.();
  }
}

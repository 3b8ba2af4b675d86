import { setTimeout as sleep } from "node:timers/promises";
import {
  AckPolicy,
  DeliverPolicy,
  jetstream,
  type ConsumerConfig,
  type ConsumerMessages,
  type JetStreamManager,
  type JsMsg,
} from "@nats-io/jetstream";
import { nanos } from "@nats-io/nats-core";
import type { NatsConnection } from "@nats-io/transport-node";
import { backoffDelay, type BackoffPolicy } from "../backoff.js";
import { FilerelayError, PayloadError } from "../errors.js";

const READ_FETCH_EXPIRES_MS = 5_000;
/** Consecutive read failures without progress before giving up (transiently). */
const READ_MAX_FAILURES = 8;
/** Wait between attempts to recreate the consumer: 250 ms doubling, at most 4 s. */
const RETRY_BACKOFF: BackoffPolicy = { baseMs: 250, maxMs: 4000 };

/**
 * Our own ordered pull consumer (the workaround for nats.js #430): an
 * ephemeral ack-none consumer on one subject (or a whole stream), pulled a
 * batch at a time only when the caller asks for more. Reads object chunks and
 * the payload janitor's scans alike. A gap in delivery sequence, a lost consumer
 * (broker restart), a stall or an error recreates it from the last stream
 * sequence seen; after READ_MAX_FAILURES attempts without progress it fails
 * with PAYLOAD_READ_FAILED (transient, so the message is retried).
 */
export class OrderedChunkReader {
  private consumerName: string | undefined;
  private lastStreamSeq = 0;
  private lastDeliverySeq = 0;
  private stopCurrent: (() => void) | undefined;

  constructor(
    private readonly nc: NatsConnection,
    private readonly jsm: JetStreamManager,
    private readonly stream: string,
    /** "" reads the whole stream. */
    private readonly filterSubject: string,
    private readonly batch: number,
    private readonly stallMs: number,
    private readonly signal: AbortSignal,
    private readonly extraConfig: Partial<ConsumerConfig> = {},
  ) {}

  /** Creates the consumer; false when nothing (more) matches. */
  private async create(): Promise<boolean> {
    // The caller's start (a sequence or a time) holds until the first message; then we resume after the last.
    const { deliver_policy, opt_start_seq, opt_start_time, ...extra } = this.extraConfig;
    const start =
      this.lastStreamSeq > 0
        ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: this.lastStreamSeq + 1 }
        : deliver_policy !== undefined
          ? {
              deliver_policy,
              ...(opt_start_seq !== undefined ? { opt_start_seq } : {}),
              ...(opt_start_time !== undefined ? { opt_start_time } : {}),
            }
          : { deliver_policy: DeliverPolicy.All };
    const ci = await this.jsm.consumers.add(this.stream, {
      ...extra,
      ...(this.filterSubject ? { filter_subject: this.filterSubject } : {}),
      ack_policy: AckPolicy.None,
      ...start,
      mem_storage: true,
      num_replicas: 1,
      // A reader paused by a slow sink for longer than this finds its consumer
      // gone and simply recreates it.
      inactive_threshold: nanos(60_000),
    });
    this.consumerName = ci.name;
    this.lastDeliverySeq = 0;
    return ci.num_pending > 0;
  }

  private drop(): void {
    const name = this.consumerName;
    this.consumerName = undefined;
    if (name) this.jsm.consumers.delete(this.stream, name).catch(() => undefined);
  }

  /**
   * Messages in stream order, each exactly once; ends only by the caller
   * breaking out. Pulls are pipelined: once half of a batch has been handed
   * out and the stream holds more than the rest of it, the next batch is
   * requested, so the broker is never idle waiting for our next pull (at most
   * two batches are buffered). The pull requests are served in order, so the
   * second batch's messages follow the first's; the delivery-sequence check
   * catches anything else.
   */
  async *messages(): AsyncGenerator<JsMsg> {
    const js = jetstream(this.nc);
    let failures = 0;
    for (;;) {
      if (this.signal.aborted) throw this.abortError();
      let progressed = false;
      try {
        if (!this.consumerName && !(await this.create())) return;
        const consumer = await js.consumers.get(this.stream, this.consumerName);
        const pull = () => {
          const p = consumer.fetch({ max_messages: this.batch, expires: READ_FETCH_EXPIRES_MS });
          p.catch(() => undefined);
          return p;
        };
        let nextPull: Promise<ConsumerMessages> | undefined = pull();
        while (nextPull) {
          const iter = await nextPull;
          nextPull = undefined;
          let stalled = false;
          let inBatch = 0;
          this.stopCurrent = () => {
            iter.stop();
            void nextPull?.then(
              (next) => next.stop(),
              () => undefined,
            );
          };
          const it = iter[Symbol.asyncIterator]();
          for (;;) {
            // The stall timer runs only while we wait for the broker, not while the reader is slow.
            const timer = setTimeout(() => {
              stalled = true;
              iter.stop();
            }, this.stallMs + READ_FETCH_EXPIRES_MS);
            let r: IteratorResult<JsMsg>;
            try {
              r = await it.next();
            } finally {
              clearTimeout(timer);
            }
            if (r.done) break;
            const m = r.value;
            inBatch++;
            if (m.info.deliverySequence !== this.lastDeliverySeq + 1) {
              throw new Error(
                `delivery gap: expected ${this.lastDeliverySeq + 1}, got ${m.info.deliverySequence}; recreating`,
              );
            }
            this.lastDeliverySeq = m.info.deliverySequence;
            // More in the stream than this batch still brings: ask for the next one now.
            if (!nextPull && inBatch * 2 >= this.batch && m.info.pending > this.batch - inBatch) nextPull = pull();
            if (m.info.streamSequence <= this.lastStreamSeq) continue;
            this.lastStreamSeq = m.info.streamSequence;
            progressed = true;
            failures = 0;
            yield m;
          }
          if (stalled) throw new Error(`no chunk arrived for ${this.stallMs} ms`);
        }
        this.stopCurrent = undefined;
        if (!progressed && this.consumerName) {
          // An empty fetch: the chunk stream may have ended (truncated object) or
          // the broker is slow; the caller decides via `pending` on the last message.
          const ci = await this.jsm.consumers.info(this.stream, this.consumerName);
          if (ci.num_pending === 0) return;
        }
      } catch (err) {
        this.stopCurrent?.();
        this.stopCurrent = undefined;
        if (this.signal.aborted) throw this.abortError();
        if (err instanceof FilerelayError) throw err;
        failures++;
        this.drop();
        if (failures >= READ_MAX_FAILURES) {
          throw new PayloadError(
            "PAYLOAD_READ_FAILED",
            `reading ${this.filterSubject} from ${this.stream} failed ${failures} times in a row`,
            { cause: err },
          );
        }
        await sleep(backoffDelay(failures - 1, RETRY_BACKOFF), undefined, { signal: this.signal }).catch(
          () => undefined,
        );
      }
    }
  }

  private abortError(): PayloadError {
    return new PayloadError("SHUTDOWN", `reading ${this.filterSubject} was aborted`, { cause: this.signal.reason });
  }

  close(): void {
    this.stopCurrent?.();
    this.stopCurrent = undefined;
    this.drop();
  }
}

import {
  jetstream,
  jetstreamManager,
  JetStreamApiError,
  type Consumer,
  type JetStreamManager,
} from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { describeError } from "../errors.js";
import { isConsumerNotFound, isStreamNotFound } from "../jetstreamErrors.js";
import type { Logger } from "../logger.js";
import { DEFAULT_ACK_WAIT_MS, provision, type DlqLimits } from "../provision.js";

const NS_PER_MS = 1_000_000;
/** How often a member re-reads its durable's ack_wait (another member or an operator may change it). */
const ACK_WAIT_REFRESH_MS = 5_000;

export interface GroupDurableOptions {
  stream: string;
  subject: string;
  group: string;
  /** Stream replicas when the stream has to be created. */
  replicas: number;
  dlqLimits?: DlqLimits;
  /** The ack_wait this member wants for the group (see ConsumeFilesOptions.ackWaitMs). */
  ackWaitMs?: number;
  log: Logger;
  /** Called when the durable's ack_wait changes, after the change is logged. */
  onAckWaitChange: (ackWaitMs: number) => void;
}

/** The group's durable consumer, as this member sees it now. */
export interface GroupDurable {
  readonly consumer: Consumer;
  /** The durable's current ack_wait: the group's, whatever this member was configured with. */
  readonly ackWaitMs: number;
  /** Provisions the stream and durable again (after they were deleted); a failure is logged, not thrown. */
  reprovision(): Promise<void>;
  /** Stops re-reading the durable's ack_wait. */
  stop(): void;
}

/**
 * Provisions the stream, DLQ and the group's durable, then follows the
 * durable's ack_wait: it is re-read every few seconds, and a change (by
 * another member or an operator) is reported to `onAckWaitChange`.
 */
export async function openGroupDurable(nc: NatsConnection, opts: GroupDurableOptions): Promise<GroupDurable> {
  const { log } = opts;
  const jsm = await jetstreamManager(nc);
  const ensure = async (): Promise<{ consumer: Consumer; ackWaitMs: number }> => {
    const replicas = await streamReplicas(jsm, opts.stream, opts.replicas);
    await provision(
      nc,
      { STREAM: opts.stream, SUBJECT: opts.subject, STREAM_REPLICAS: replicas },
      {
        log,
        groups: [opts.group],
        ...(opts.dlqLimits ? { dlqLimits: opts.dlqLimits } : {}),
        ...(opts.ackWaitMs !== undefined ? { ackWaitMs: opts.ackWaitMs } : {}),
      },
    );
    const consumer = await jetstream(nc).consumers.get(opts.stream, opts.group);
    const info = await consumer.info(true);
    return { consumer, ackWaitMs: durableAckWaitMs(info.config.ack_wait) };
  };
  let { consumer, ackWaitMs } = await ensure();

  let warnedAckWaitMs: number | undefined;
  /** The durable's ack_wait is the group's: a member configured otherwise says so, once per value. */
  const checkAckWait = () => {
    if (opts.ackWaitMs === undefined || opts.ackWaitMs === ackWaitMs || warnedAckWaitMs === ackWaitMs) return;
    warnedAckWaitMs = ackWaitMs;
    log.warn(
      { configuredAckWaitMs: opts.ackWaitMs, groupAckWaitMs: ackWaitMs },
      `ACK_WAIT_MS is ${opts.ackWaitMs} but group ${opts.group}'s durable has ack_wait ${ackWaitMs}; ` +
        "following the durable's value (a larger one is never lowered while a member is active): " +
        "give every member of a group the same ACK_WAIT_MS",
    );
  };
  checkAckWait();
  /** Paces from the durable's ack_wait as it is now (another member or an operator may have changed it). */
  const follow = (ms: number) => {
    if (ms === ackWaitMs) return;
    log.info({ previousAckWaitMs: ackWaitMs, ackWaitMs: ms }, "group's ack_wait changed; keep-alive follows it");
    ackWaitMs = ms;
    opts.onAckWaitChange(ms);
    checkAckWait();
  };
  let refreshing = false;
  const refresh = setInterval(() => {
    if (refreshing) return;
    refreshing = true;
    consumer
      .info(false)
      .then((info) => follow(durableAckWaitMs(info.config.ack_wait)))
      // The pull loop notices (and handles) a broker or durable that is gone.
      .catch((err: unknown) => log.debug({ err: describeError(err) }, "cannot re-read the group's ack_wait"))
      .finally(() => {
        refreshing = false;
      });
  }, ACK_WAIT_REFRESH_MS);

  return {
    get consumer() {
      return consumer;
    },
    get ackWaitMs() {
      return ackWaitMs;
    },
    async reprovision() {
      const ensured = await ensure().catch((e: unknown) => {
        log.warn({ err: describeError(e) }, "re-provisioning the group failed");
        return undefined;
      });
      if (ensured) {
        consumer = ensured.consumer;
        follow(ensured.ackWaitMs);
      }
    },
    stop() {
      clearInterval(refresh);
    },
  };
}

/** Did a pull fail because the group's durable (or its stream) no longer exists? */
export function isConsumerGone(err: unknown): boolean {
  if (err instanceof JetStreamApiError) return isConsumerNotFound(err) || isStreamNotFound(err);
  return /consumer (not found|deleted)|stream not found/i.test(String((err as Error | undefined)?.message));
}

function durableAckWaitMs(ackWaitNs: number | undefined): number {
  return (ackWaitNs ?? DEFAULT_ACK_WAIT_MS * NS_PER_MS) / NS_PER_MS;
}

async function streamReplicas(jsm: JetStreamManager, stream: string, fallback: number): Promise<number> {
  try {
    return (await jsm.streams.info(stream)).config.num_replicas;
  } catch {
    return fallback;
  }
}

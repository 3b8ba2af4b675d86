import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type StreamInfo,
} from "@nats-io/jetstream";
import {
  isConsumerNotFound,
  isStreamNotFound,
  NatsError,
  type Logger,
  type NatsConnection,
} from "@filerelay/core/internal";

const NS_PER_MS = 1_000_000;

export interface EventsProvisionConfig {
  EVENTS_STREAM: string;
  EVENT_SUBJECTS: readonly string[];
  BATCH_GROUP: string;
  STREAM_REPLICAS: number;
  EVENTS_ACK_WAIT_MS: number;
  EVENTS_MAX_ACK_PENDING: number;
}

/** The durable's settings: explicit acks (each event acked after its batch's PubAck), never given up on. */
export function eventsConsumerConfig(config: EventsProvisionConfig) {
  return {
    durable_name: config.BATCH_GROUP,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: config.EVENTS_ACK_WAIT_MS * NS_PER_MS,
    max_deliver: -1,
    max_ack_pending: config.EVENTS_MAX_ACK_PENDING,
  };
}

/**
 * The stream that keeps events until a batch holding them is published, and
 * the batcher's durable on it. Interest retention: an event is removed once
 * acknowledged, so the stream holds only what is not yet in a file. Both are
 * created if missing; an existing stream gains missing subjects, an existing
 * durable gets this ack wait and max ack pending. Nothing is deleted.
 */
export async function provisionEvents(nc: NatsConnection, config: EventsProvisionConfig, log: Logger): Promise<void> {
  try {
    const jsm = await jetstreamManager(nc);
    let info: StreamInfo | undefined;
    try {
      info = await jsm.streams.info(config.EVENTS_STREAM);
    } catch (err) {
      if (!isStreamNotFound(err)) throw err;
    }
    if (!info) {
      await jsm.streams.add({
        name: config.EVENTS_STREAM,
        subjects: [...config.EVENT_SUBJECTS],
        retention: RetentionPolicy.Interest,
        storage: StorageType.File,
        discard: DiscardPolicy.Old,
        num_replicas: config.STREAM_REPLICAS,
        duplicate_window: 120_000 * NS_PER_MS,
        allow_direct: true,
      });
      log.info({ stream: config.EVENTS_STREAM, subjects: config.EVENT_SUBJECTS }, "provisioned: created events stream");
    } else {
      const subjects = info.config.subjects ?? [];
      const missing = config.EVENT_SUBJECTS.filter((s) => !subjects.includes(s));
      if (missing.length > 0) {
        await jsm.streams.update(config.EVENTS_STREAM, { ...info.config, subjects: [...subjects, ...missing] });
        log.info({ stream: config.EVENTS_STREAM, added: missing }, "provisioned: events stream subjects added");
      }
    }
    const wanted = eventsConsumerConfig(config);
    try {
      const c = await jsm.consumers.info(config.EVENTS_STREAM, config.BATCH_GROUP);
      if (c.config.ack_wait !== wanted.ack_wait || c.config.max_ack_pending !== wanted.max_ack_pending) {
        await jsm.consumers.update(config.EVENTS_STREAM, config.BATCH_GROUP, {
          ack_wait: wanted.ack_wait,
          max_ack_pending: wanted.max_ack_pending,
        });
        log.info({ group: config.BATCH_GROUP }, "provisioned: batcher durable updated");
      }
    } catch (err) {
      if (!isConsumerNotFound(err)) throw err;
      await jsm.consumers.add(config.EVENTS_STREAM, wanted);
      log.info({ group: config.BATCH_GROUP }, "provisioned: created batcher durable");
    }
  } catch (err) {
    throw new NatsError("PROVISION_FAILED", `could not provision stream ${config.EVENTS_STREAM}`, { cause: err });
  }
}

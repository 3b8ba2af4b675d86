import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";

/**
 * Recognising the JetStream API's "does not exist" answers. Only the error
 * code counts: the message text differs between server versions.
 */

/** The server answered that the stream does not exist. */
export function isStreamNotFound(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound;
}

/** The server answered that the consumer does not exist (on a stream that does). */
export function isConsumerNotFound(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === JetStreamApiCodes.ConsumerNotFound;
}

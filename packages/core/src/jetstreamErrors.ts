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

/**
 * Server codes of a create that lost a race with an identical create from
 * another replica: the name is taken (10058 stream, 10013 consumer) or, on
 * 2.9 when two adds of one stream interleave, its subjects "overlap" the
 * stream the other add just made (10065).
 */
const CREATE_RACE_CODES: ReadonlySet<number> = new Set([10058, 10065, 10013]);

/** The server refused a create because something of that name or those subjects now exists. */
export function isCreateRace(err: unknown): boolean {
  return err instanceof JetStreamApiError && CREATE_RACE_CODES.has(err.code);
}

/**
 * Names of the JetStream objects a deployment uses, all derived from STREAM so
 * several independent deployments can share one NATS account.
 */
export interface JetStreamNames {
  /** Stream capturing envelopes (DESIGN §6), e.g. FILES. */
  stream: string;
  /** Subjects of that stream, e.g. ["files.>"]. */
  streamSubjects: string[];
  /** Dead-letter stream, e.g. FILES_DLQ. */
  dlqStream: string;
  dlqSubjects: string[];
  /** KV bucket of published file fingerprints. */
  fingerprintBucket: string;
  /** KV bucket of short-lived publish claims (expire when a replica dies). */
  claimBucket: string;
  /** Object Store bucket for payloads over INLINE_MAX_BYTES. */
  payloadBucket: string;
}

export const DLQ_SUBJECT_PREFIX = "filerelay.dlq";

export function jetstreamNames(config: { STREAM: string; SUBJECT: string }): JetStreamNames {
  const firstToken = config.SUBJECT.split(".")[0] ?? config.SUBJECT;
  return {
    stream: config.STREAM,
    streamSubjects: [`${firstToken}.>`],
    dlqStream: `${config.STREAM}_DLQ`,
    dlqSubjects: [`${DLQ_SUBJECT_PREFIX}.>`],
    fingerprintBucket: `${config.STREAM}_fingerprints`,
    claimBucket: `${config.STREAM}_claims`,
    payloadBucket: `${config.STREAM}_payloads`,
  };
}

/** Subject on which a group's dead letters are published: `filerelay.dlq.<group>`. */
export function dlqSubject(group: string): string {
  return `${DLQ_SUBJECT_PREFIX}.${group}`;
}

/**
 * Names of the JetStream objects a deployment uses, all derived from STREAM so
 * several independent deployments can share one NATS account. Every stream,
 * bucket and backing-stream name is built here and nowhere else.
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
  /** The stream behind fingerprintBucket (KV_<bucket>). */
  fingerprintStream: string;
  /** KV bucket of short-lived publish claims (expire when a replica dies). */
  claimBucket: string;
  /** The stream behind claimBucket (KV_<bucket>). */
  claimStream: string;
  /** Object Store bucket for payloads over INLINE_MAX_BYTES. */
  payloadBucket: string;
  /** The stream behind payloadBucket (OBJ_<bucket>). */
  payloadStream: string;
  /** KV bucket of payload objects that dead letters still reference. */
  pinBucket: string;
  /** KV bucket of leases of periodic jobs shared by replicas. */
  leaseBucket: string;
  /** Stream of the status ledger (DESIGN §8), e.g. FILES_STATUS. */
  statusStream: string;
  /** Subject prefix of ledger entries, e.g. filerelay.status.FILES. */
  statusPrefix: string;
  /** Subject prefix of live byte progress (core NATS, never stored), e.g. filerelay.progress.FILES. */
  progressPrefix: string;
}

export const DLQ_SUBJECT_PREFIX = "filerelay.dlq";
export const STATUS_SUBJECT_PREFIX = "filerelay.status";
export const PROGRESS_SUBJECT_PREFIX = "filerelay.progress";

export function jetstreamNames(config: { STREAM: string; SUBJECT: string }): JetStreamNames {
  const firstToken = config.SUBJECT.split(".")[0] ?? config.SUBJECT;
  const fingerprintBucket = `${config.STREAM}_fingerprints`;
  const claimBucket = `${config.STREAM}_claims`;
  const payloadBucket = `${config.STREAM}_payloads`;
  return {
    stream: config.STREAM,
    streamSubjects: [`${firstToken}.>`],
    dlqStream: `${config.STREAM}_DLQ`,
    dlqSubjects: [`${DLQ_SUBJECT_PREFIX}.>`],
    fingerprintBucket,
    fingerprintStream: kvStreamName(fingerprintBucket),
    claimBucket,
    claimStream: kvStreamName(claimBucket),
    payloadBucket,
    payloadStream: objectStreamName(payloadBucket),
    pinBucket: pinBucketName(config.STREAM),
    leaseBucket: leaseBucketName(config.STREAM),
    statusStream: `${config.STREAM}_STATUS`,
    statusPrefix: `${STATUS_SUBJECT_PREFIX}.${config.STREAM}`,
    progressPrefix: `${PROGRESS_SUBJECT_PREFIX}.${config.STREAM}`,
  };
}

/** Subject on which a group's dead letters are published: `filerelay.dlq.<group>`. */
export function dlqSubject(group: string): string {
  return `${DLQ_SUBJECT_PREFIX}.${group}`;
}

/** The stream behind an Object Store bucket, as every NATS client names it. */
export function objectStreamName(bucket: string): string {
  return `OBJ_${bucket}`;
}

/** The stream behind a KV bucket, as every NATS client names it. */
export function kvStreamName(bucket: string): string {
  return `KV_${bucket}`;
}

/** KV bucket of pinned objects (one key per object a dead letter references). */
export function pinBucketName(stream: string): string {
  return `${stream}_pins`;
}

/** KV bucket of leases (one key per periodic job; history 1, nothing grows). */
export function leaseBucketName(stream: string): string {
  return `${stream}_leases`;
}

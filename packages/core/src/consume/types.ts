import type { Readable } from "node:stream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Envelope } from "../envelope.js";
import type { ErrorCode } from "../errors.js";
import type { Logger } from "../logger.js";
import type { DlqLimits } from "../provision.js";
import type { StatusLedger } from "../status/ledger.js";

export interface FileContext {
  envelope: Envelope;
  /** The payload (inline or object) as a verifying Readable; call once per attempt. */
  open(): Readable;
  /** 1 on the first delivery. */
  deliveryCount: number;
  /** Child logger bound to this file (fileId, path). */
  log: Logger;
  /** Tells the broker we are still working (throttled); the SDK also does this on a timer. */
  working(): void;
  /** Aborted when a shutdown's drain deadline passes: stop and throw. */
  signal: AbortSignal;
  headers: Readonly<Record<string, string>>;
}

export interface FileOutcome {
  envelope?: Envelope;
  outcome: "acked" | "retry" | "dead-lettered";
  code?: ErrorCode;
  error?: string;
  deliveryCount: number;
  durationMs: number;
  bytes?: number;
  /** Redelivery delay when outcome is "retry". */
  delayMs?: number;
}

/** What a handler may tell about a file it landed. */
export interface FileResult {
  /** Where the file landed, as a URI (file:///out/a.csv, s3://bucket/key): recorded in the status ledger. */
  location?: string | undefined;
}

export type FileHandler = (ctx: FileContext) => Promise<FileResult | void>;

export interface ConsumeFilesOptions {
  /** A connection to use (left open); or `url` to let the SDK connect (and close). */
  nats?: NatsConnection;
  url?: string | readonly string[];
  /** Durable consumer name shared by every member of the sink group. */
  group: string;
  /** Default files.input. */
  subject?: string;
  /** Default FILES. */
  stream?: string;
  /** Handlers run at once (default 4); never more messages are pulled than can run. */
  concurrency?: number;
  /**
   * Of those, handlers of Object Store payloads (large files) at once (default:
   * `concurrency`): bounds the memory of payload streams while small inline
   * files keep every slot busy. The others wait, kept alive, for a turn.
   */
  objectConcurrency?: number;
  signal?: AbortSignal;
  /** Attempts before a transient failure is dead-lettered (default 5). */
  maxDeliver?: number;
  /** First retry delay (default 1000): nak delay = backoffMs * 2^(deliveryCount-1). */
  backoffMs?: number;
  /** Cap for a single retry delay (default 15 min). */
  maxBackoffMs?: number;
  /**
   * Wanted ack_wait of the group's durable: a new durable gets it, an existing
   * one is raised to it, or lowered only while no member is active; unset
   * keeps what the durable has (or 30 s for a new one). Every member paces its
   * keep-alive from the durable's current value, re-read every few seconds,
   * and warns when that differs from this one.
   */
  ackWaitMs?: number;
  errorDir?: string;
  log?: Logger;
  /** After `signal` aborts, how long in-flight handlers may finish (default 30 s). */
  drainTimeoutMs?: number;
  onOutcome?: (o: FileOutcome) => void;
  /** Buckets whose objects may be read (default: this deployment's payload bucket). */
  allowedBuckets?: readonly string[];
  /** Stream replicas when the SDK has to create the stream (default 1; an existing stream is left as is). */
  replicas?: number;
  /** DLQ stream limits to apply (see ProvisionOptions.dlqLimits; unset leaves an existing DLQ stream as is). */
  dlqLimits?: DlqLimits;
  /** Pull request lifetime (default 5 s): bounds how long a shutdown waits for a pull to end. */
  fetchExpiresMs?: number;
  /**
   * Level of the "file handled" line after an ack (default info). A handler
   * that logs its own outcome line per file (the producer) sets debug, so a
   * file costs one info line, not two.
   */
  ackedLogLevel?: "info" | "debug";
  /**
   * Remove an envelope's payload object once this group's ack leaves no
   * group that still needs it (default true). Objects are otherwise left to
   * the periodic sweep's grace period.
   */
  releasePayloads?: boolean;
  /**
   * The status ledger to record deliveries in (DESIGN §8): `in_progress`
   * with byte progress while a large file is handled, `delivered` (with the
   * handler's location) before the ack, `failed` with the dead letter's code.
   * Default: the deployment's ledger, if one is provisioned; `false` records nothing.
   */
  status?: StatusLedger | false;
}

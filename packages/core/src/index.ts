/**
 * @filerelay/core: the SDK for sources, stages and sinks on the filerelay bus
 * (DESIGN §7). This list is the whole public API; the services' own building
 * blocks are behind `@filerelay/core/internal` and may change without notice.
 */

// Publishing and consuming files.
export { publishFile, buildEnvelope, DEFAULT_INLINE_MAX_BYTES } from "./publish/publishFile.js";
export type { FileMeta, PublishFileOptions, PublishFileResult } from "./publish/publishFile.js";
export { contentTypeFor } from "./publish/contentType.js";
export { consumeFiles } from "./consume/consumeFiles.js";
export type { ConsumeFilesOptions, FileContext, FileOutcome, FileResult } from "./consume/types.js";
export { openPayload, checkObjectPayload } from "./payload.js";

// The status ledger: where is my file? (DESIGN §8).
export { openStatusLedger, StatusLedger } from "./status/ledger.js";
export type { StatusFilter, StatusLedgerOptions } from "./status/ledger.js";
export type { Delivery, DeliveryState, FileEvent, FileRecord, FileState } from "./status/record.js";
export type { StatusUpdate, StatusWatch, WatchFilter } from "./status/watch.js";

// The envelope (DESIGN §3).
export {
  CE_SPECVERSION,
  CE_TYPE,
  EXTENSION_NAMES,
  HEADER_NAMES,
  envelopeHeadersSchema,
  envelopeJsonSchema,
  envelopeToHeaders,
  envelopeToRecord,
  fileVersionId,
  formatPayloadRef,
  headersToRecord,
  parseEnvelope,
  parsePayloadRef,
} from "./envelope.js";
export type { Envelope, EnvelopeExtensions, EnvelopeHeaders, PayloadRef } from "./envelope.js";

// Dead letters and JetStream names.
export { DLQ_HEADERS } from "./deadLetter.js";
export { DLQ_SUBJECT_PREFIX, dlqSubject, jetstreamNames } from "./names.js";
export type { JetStreamNames } from "./names.js";

// Errors: one code table, one class per area.
export {
  ERROR_CODES,
  ConfigError,
  EnvelopeError,
  FilerelayError,
  NatsError,
  PayloadError,
  PermanentError,
  SinkError,
  SourceError,
  describeError,
  errorCode,
  isEnvironmental,
  isFilerelayError,
  isPermanent,
} from "./errors.js";
export type { ErrorCode } from "./errors.js";

// Running a service of one's own: configuration, logging, NATS, signals.
export {
  commonEnvShape,
  envBool,
  envBytes,
  envDuration,
  envEnum,
  envFileMode,
  envInt,
  envList,
  envName,
  envString,
  envSubject,
  loadConfig,
} from "./config.js";
export type { Env, LoadConfigOptions } from "./config.js";
export { createLogger, silentLogger } from "./logger.js";
export type { Logger } from "./logger.js";
export { connectNats } from "./nats.js";
export type { NatsConnection } from "./nats.js";
export { provision } from "./provision.js";
export type { ProvisionOptions } from "./provision.js";
export { runService } from "./service.js";
export type { ServiceContext } from "./service.js";

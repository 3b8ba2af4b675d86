/**
 * @filerelay/core/internal: every building block of the filerelay services,
 * for the services themselves, the CLI and the tests. Not a stable API: SDK
 * users import from `@filerelay/core`.
 */
export * from "./index.js";
export * from "./errors.js";
export * from "./config.js";
export * from "./logger.js";
export * from "./backoff.js";
export * from "./names.js";
export * from "./jetstreamErrors.js";
export * from "./nats.js";
export * from "./provision.js";
export * from "./envelope.js";
export * from "./service.js";
export * from "./metrics.js";
export * from "./http.js";
export * from "./payload.js";
export * from "./payloadJanitor.js";
export * from "./payloadRelease.js";
export * from "./lease.js";
export * from "./deadLetter.js";
export * from "./deadLetterFit.js";
export * from "./consumeFiles.js";
export * from "./configReference.js";
export * from "./semaphore.js";
export * from "./retention.js";
export * from "./publish/fingerprint.js";
export * from "./publish/contentType.js";
export * from "./publish/publishFile.js";
export * from "./conflictName.js";
export * from "./fsUtil.js";
export * from "./status/ledger.js";
export * from "./status/record.js";
export * from "./status/subjects.js";
export * from "./status/watch.js";

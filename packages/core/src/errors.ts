/**
 * One table of error codes for every filerelay component. A code is a stable,
 * machine-readable reason: it appears in logs, `.error.json` files, DLQ headers
 * (`filerelay-error-code`) and metrics labels, so never rename one.
 *
 * `permanent: true` means retrying cannot help (dead-letter / error dir at once).
 */
export const ERROR_CODES = {
  // configuration and start-up
  CONFIG_INVALID: { permanent: true, description: "configuration is invalid" },
  NATS_CONNECT_FAILED: { permanent: false, description: "could not connect to NATS" },
  NATS_AUTH_FAILED: { permanent: true, description: "NATS rejected the credentials" },
  PROVISION_FAILED: { permanent: false, description: "could not create or update JetStream objects" },
  // envelope
  ENVELOPE_INVALID: { permanent: true, description: "envelope headers are missing or malformed" },
  ENVELOPE_SIZE_MISMATCH: { permanent: true, description: "inline body length differs from ce-filesize" },
  ENVELOPE_TOO_LARGE: { permanent: true, description: "ce-filesize exceeds MAX_FILE_SIZE" },
  CONTENT_TYPE_NOT_ALLOWED: { permanent: true, description: "content type is not in ALLOWED_CONTENT_TYPES" },
  // payload transport
  PAYLOAD_MISSING: { permanent: true, description: "the referenced payload object does not exist" },
  PAYLOAD_FOREIGN_BUCKET: {
    permanent: true,
    description: "ce-payload references a bucket this deployment does not own",
  },
  PAYLOAD_DIGEST_MISMATCH: { permanent: true, description: "payload bytes do not match ce-sha256" },
  PAYLOAD_SIZE_MISMATCH: { permanent: true, description: "payload length does not match ce-filesize" },
  PAYLOAD_READ_FAILED: { permanent: false, description: "reading the payload failed" },
  PAYLOAD_UPLOAD_FAILED: { permanent: false, description: "uploading the payload failed" },
  // consumer (source side)
  FILE_TOO_LARGE: { permanent: true, description: "file exceeds MAX_FILE_SIZE" },
  FILE_VANISHED: { permanent: false, description: "file disappeared before it could be read" },
  FILE_CHANGED: { permanent: false, description: "file changed while it was being read" },
  FILE_READ_FAILED: { permanent: false, description: "file could not be read" },
  FILE_NOT_REGULAR: { permanent: true, description: "path is not a regular file" },
  SYMLINK_REFUSED: { permanent: true, description: "symlink is not followed or resolves outside INPUT_DIR" },
  PUBLISH_FAILED: { permanent: false, description: "JetStream did not acknowledge the publish" },
  DISPOSE_FAILED: { permanent: false, description: "archiving or deleting the source file failed" },
  // producer (sink side)
  PATH_UNSAFE: { permanent: true, description: "the output path would leave OUTPUT_DIR / S3_PREFIX" },
  NAME_INVALID: { permanent: true, description: "a name in the envelope cannot be used for output" },
  CHECKSUM_MISMATCH: { permanent: true, description: "written bytes do not match ce-sha256" },
  CONFLICT: { permanent: true, description: "target exists with different content and ON_CONFLICT=fail" },
  DISK_SPACE_LOW: { permanent: false, description: "not enough free space on the output filesystem" },
  FILE_EXCEEDS_DISK: {
    permanent: true,
    description: "the file is larger than the whole output filesystem: it can never be written there",
  },
  SINK_UNAVAILABLE: { permanent: false, description: "the sink cannot be reached (network error, 5xx, throttling)" },
  WRITE_FAILED: { permanent: false, description: "writing the output failed" },
  OUTPUT_NOT_WRITABLE: {
    permanent: false,
    description: "OUTPUT_DIR (or a directory under it) refuses writes from this process: owner, mode, read-only mount",
  },
  S3_UPLOAD_FAILED: { permanent: false, description: "S3 upload failed" },
  S3_VERIFY_FAILED: { permanent: false, description: "S3 object does not match after upload" },
  S3_ACCESS_DENIED: { permanent: false, description: "S3 denied access (check credentials and policy)" },
  S3_NO_SUCH_BUCKET: { permanent: false, description: "S3 bucket does not exist" },
  MAX_DELIVER_EXCEEDED: { permanent: true, description: "message failed MAX_DELIVER times" },
  HANDLER_FAILED: { permanent: false, description: "sink handler failed" },
  HANDLER_PERMANENT: { permanent: true, description: "sink handler rejected the file permanently" },
  DLQ_PUBLISH_FAILED: { permanent: false, description: "could not publish to the dead-letter stream" },
  STATUS_WRITE_FAILED: { permanent: false, description: "the status ledger did not store an entry" },
  SHUTDOWN: { permanent: false, description: "the service is shutting down" },
  LEASE_LOST: {
    permanent: false,
    description: "this replica lost (or could not renew) the lease that lets one replica of a group work",
  },
  // transformer (stage)
  ARCHIVE_UNSAFE_PATH: {
    permanent: true,
    description: "an archive entry would escape its root (../, absolute path, link or device entry)",
  },
  ARCHIVE_TOO_LARGE: {
    permanent: true,
    description: "an archive expands beyond EXTRACT_MAX_BYTES, EXTRACT_MAX_FILES or EXTRACT_MAX_RATIO",
  },
  ARCHIVE_CORRUPT: { permanent: true, description: "an archive is truncated or damaged and cannot be read" },
  CONVERT_FAILED: { permanent: true, description: "the file could not be converted (DuckDB's message says why)" },
  // gateway (HTTP requests)
  AUTH_REQUIRED: { permanent: true, description: "no valid API key (Authorization: Bearer <key>)" },
  AUTH_FORBIDDEN: { permanent: true, description: "the API key's role does not allow this request" },
  RATE_LIMITED: { permanent: false, description: "too many requests for this API key (RATE_LIMIT_PER_MINUTE)" },
  REQUEST_INVALID: { permanent: true, description: "the request is malformed or incomplete" },
  NOT_FOUND: { permanent: true, description: "no such file, upload or job" },
  UPLOAD_TOO_LARGE: { permanent: true, description: "the upload exceeds MAX_UPLOAD_SIZE" },
  UPLOAD_INCOMPLETE: { permanent: false, description: "chunks of the upload are still missing" },
  JOB_ROOT_REFUSED: { permanent: true, description: "the folder is not under GATEWAY_JOB_ROOTS" },
  INTERNAL_ERROR: { permanent: false, description: "the service failed unexpectedly" },
} as const satisfies Record<string, { permanent: boolean; description: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

/**
 * Codes meaning "the broker or the sink is unavailable", not "this file is bad".
 * They are retried with capped backoff for as long as the outage lasts and do
 * not use up a file's MAX_DELIVER budget: a full disk or an S3 outage must not
 * dead-letter every file that arrives meanwhile.
 */
export const ENVIRONMENTAL_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  "DISK_SPACE_LOW",
  "OUTPUT_NOT_WRITABLE",
  "SINK_UNAVAILABLE",
  "PAYLOAD_READ_FAILED",
  "NATS_CONNECT_FAILED",
  "DLQ_PUBLISH_FAILED",
  "STATUS_WRITE_FAILED",
  "SHUTDOWN",
]);

export interface FilerelayErrorOptions {
  cause?: unknown;
  /** Extra structured context for logs and error records. */
  details?: Record<string, unknown>;
  /** Overrides the table's `permanent` flag for this instance. */
  permanent?: boolean;
}

/** Base class: every error filerelay raises on purpose carries a `code`. */
export class FilerelayError extends Error {
  override name = "FilerelayError";
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;
  readonly permanent: boolean;

  constructor(code: ErrorCode, message: string, options: FilerelayErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details ?? {};
    this.permanent = options.permanent ?? ERROR_CODES[code].permanent;
  }
}

/** Bad configuration: services print `message` and exit 78 (EX_CONFIG). */
export class ConfigError extends FilerelayError {
  override name = "ConfigError";
  readonly problems: readonly string[];
  constructor(problems: readonly string[], options: FilerelayErrorOptions = {}) {
    super(
      "CONFIG_INVALID",
      `Invalid configuration (${problems.length} problem${problems.length === 1 ? "" : "s"}):\n` +
        problems.map((p) => `  - ${p}`).join("\n"),
      options,
    );
    this.problems = problems;
  }
}

/** A malformed or unacceptable envelope. Always permanent. */
export class EnvelopeError extends FilerelayError {
  override name = "EnvelopeError";
}

/** Payload transport problems (object store or inline body). */
export class PayloadError extends FilerelayError {
  override name = "PayloadError";
}

/** NATS connection / provisioning problems. */
export class NatsError extends FilerelayError {
  override name = "NatsError";
}

/** Source-side (consumer) file problems. */
export class SourceError extends FilerelayError {
  override name = "SourceError";
}

/** Sink-side (producer) problems. */
export class SinkError extends FilerelayError {
  override name = "SinkError";
}

/**
 * Thrown by a sink handler to say "this will never succeed": the SDK dead-letters
 * the message at once instead of retrying.
 */
export class PermanentError extends FilerelayError {
  override name = "PermanentError";
  constructor(message: string, options: FilerelayErrorOptions & { code?: ErrorCode } = {}) {
    super(options.code ?? "HANDLER_PERMANENT", message, { ...options, permanent: true });
  }
}

export function isFilerelayError(err: unknown): err is FilerelayError {
  return err instanceof FilerelayError;
}

/** Is retrying pointless? Unknown errors are assumed transient. */
export function isPermanent(err: unknown): boolean {
  return err instanceof FilerelayError && err.permanent;
}

/** Is this an outage of the broker or sink rather than a problem of the file? */
export function isEnvironmental(err: unknown): boolean {
  return err instanceof FilerelayError && !err.permanent && ENVIRONMENTAL_CODES.has(err.code);
}

/** The code of a FilerelayError, or `fallback` for anything else. */
export function errorCode(err: unknown, fallback: ErrorCode = "HANDLER_FAILED"): ErrorCode {
  return err instanceof FilerelayError ? err.code : fallback;
}

/** A one-line message including the cause chain, for logs and DLQ headers. */
export function describeError(err: unknown): string {
  const parts: string[] = [];
  let cur: unknown = err;
  for (let depth = 0; cur !== undefined && cur !== null && depth < 5; depth++) {
    if (cur instanceof Error) {
      const code = (cur as { code?: unknown }).code;
      const text =
        typeof code === "string" && !(cur instanceof FilerelayError) ? `${cur.message} (${code})` : cur.message;
      // A wrapper that already quotes its cause's message ("…: connection refused") is not repeated.
      if (!(parts.length > 0 && cur.message !== "" && parts[parts.length - 1]?.endsWith(cur.message))) parts.push(text);
      cur = cur.cause;
    } else {
      parts.push(typeof cur === "string" ? cur : JSON.stringify(cur));
      break;
    }
  }
  return parts.join(": ");
}

import { FilerelayError, isFilerelayError, type ErrorCode } from "@filerelay/core";

/** A refused request: an HTTP status and a code from core's ERROR_CODES, answered as `{error, code}`. */
export class HttpError extends FilerelayError {
  override name = "HttpError";
  readonly status: number;
  constructor(status: number, code: ErrorCode, message: string, options: { cause?: unknown } = {}) {
    super(code, message, options);
    this.status = status;
  }
}

/** The HTTP status a FilerelayError raised while handling a request maps to. */
const STATUS_BY_CODE: Partial<Record<ErrorCode, number>> = {
  AUTH_REQUIRED: 401,
  AUTH_FORBIDDEN: 403,
  JOB_ROOT_REFUSED: 403,
  NOT_FOUND: 404,
  UPLOAD_INCOMPLETE: 409,
  PAYLOAD_MISSING: 409,
  UPLOAD_TOO_LARGE: 413,
  FILE_TOO_LARGE: 413,
  CONTENT_TYPE_NOT_ALLOWED: 415,
  RATE_LIMITED: 429,
  REQUEST_INVALID: 400,
  PATH_UNSAFE: 400,
  NAME_INVALID: 400,
  ENVELOPE_INVALID: 400,
  CHECKSUM_MISMATCH: 422,
  PUBLISH_FAILED: 503,
  NATS_CONNECT_FAILED: 503,
  PAYLOAD_UPLOAD_FAILED: 503,
  SHUTDOWN: 503,
};

export interface ErrorReply {
  status: number;
  body: { error: string; code: ErrorCode };
}

/**
 * What a client is told about a failure: a status and `{error, code}`, never a
 * stack trace. Unexpected errors get a generic message (the log has the rest).
 */
export function errorReply(err: unknown): ErrorReply {
  if (err instanceof HttpError) return { status: err.status, body: { error: err.message, code: err.code } };
  if (isFilerelayError(err)) {
    const status = STATUS_BY_CODE[err.code] ?? (err.permanent ? 400 : 503);
    return { status, body: { error: err.message, code: err.code } };
  }
  const fastify = fastifyStatus(err);
  if (fastify !== undefined) {
    const code: ErrorCode =
      fastify.status === 413
        ? "UPLOAD_TOO_LARGE"
        : fastify.status === 415
          ? "CONTENT_TYPE_NOT_ALLOWED"
          : fastify.status === 429
            ? "RATE_LIMITED"
            : fastify.status === 404
              ? "NOT_FOUND"
              : "REQUEST_INVALID";
    return { status: fastify.status, body: { error: fastify.message, code } };
  }
  return { status: 500, body: { error: "internal error", code: "INTERNAL_ERROR" } };
}

/** Fastify's own client errors (validation, body parsing, limits) carry a 4xx statusCode. */
function fastifyStatus(err: unknown): { status: number; message: string } | undefined {
  if (typeof err !== "object" || err === null) return undefined;
  const e = err as { statusCode?: unknown; message?: unknown };
  if (typeof e.statusCode !== "number" || e.statusCode < 400 || e.statusCode >= 500) return undefined;
  return { status: e.statusCode, message: typeof e.message === "string" ? e.message : "bad request" };
}

import { FilerelayError, SinkError, type ErrorCode } from "@filerelay/core";

interface SdkError extends Error {
  $metadata?: { httpStatusCode?: number };
}

function asSdkError(err: unknown): SdkError | undefined {
  return err instanceof Error ? err : undefined;
}

/** The S3 error name (AccessDenied, NoSuchKey…), if any. */
export function s3ErrorName(err: unknown): string | undefined {
  return asSdkError(err)?.name;
}

function statusOf(err: unknown): number | undefined {
  return asSdkError(err)?.$metadata?.httpStatusCode;
}

const ACCESS_DENIED_NAMES = new Set([
  "AccessDenied",
  "AllAccessDisabled",
  "InvalidAccessKeyId",
  "SignatureDoesNotMatch",
  "InvalidToken",
  "ExpiredToken",
  "TokenRefreshRequired",
  "CredentialsProviderError",
]);

/** Maps an SDK error to a SinkError with a code from core's table and a message an operator can act on. */
export function toSinkError(err: unknown, action: string, bucket: string, key?: string): FilerelayError {
  if (err instanceof FilerelayError) return err;
  const e = asSdkError(err);
  const name = e?.name ?? "Error";
  const where = key === undefined ? `bucket ${bucket}` : `s3://${bucket}/${key}`;
  let code: ErrorCode = "S3_UPLOAD_FAILED";
  let message = `S3 ${action} failed for ${where}: ${e?.message ?? String(err)}`;
  if (ACCESS_DENIED_NAMES.has(name) || statusOf(err) === 403) {
    code = "S3_ACCESS_DENIED";
    message = `S3 denied ${action} on ${where} (${name}): check the credentials (AWS provider chain) and the bucket policy`;
  } else if (name === "NoSuchBucket") {
    code = "S3_NO_SUCH_BUCKET";
    message = `S3 bucket ${JSON.stringify(bucket)} does not exist: create it or fix S3_BUCKET`;
  } else if (isOutage(err, name)) {
    // Not the file's fault: the SDK consumer retries it for as long as the outage lasts.
    code = "SINK_UNAVAILABLE";
    message = `S3 endpoint unavailable during ${action} on ${where} (${name}): ${e?.message ?? String(err)}`;
  }
  return new SinkError(code, message, { cause: err, details: { bucket, key, s3Error: name } });
}

const THROTTLING_NAMES = new Set(["SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "TimeoutError"]);

/** Network errors (no HTTP response), 5xx and throttling: the store is down or overloaded. */
function isOutage(err: unknown, name: string): boolean {
  const status = statusOf(err);
  return status === undefined || status >= 500 || status === 429 || THROTTLING_NAMES.has(name);
}

export function isNotFound(err: unknown): boolean {
  const name = asSdkError(err)?.name;
  return name === "NotFound" || name === "NoSuchKey" || statusOf(err) === 404;
}

/** The store does not implement the call (some S3-compatible stores lack multipart listing or abort). */
export function isUnsupported(err: unknown): boolean {
  const name = asSdkError(err)?.name;
  const status = statusOf(err);
  return name === "NotImplemented" || name === "MethodNotAllowed" || status === 501 || status === 405;
}

/** A conditional write (If-None-Match) lost to a concurrent writer. */
export function isPreconditionFailed(err: unknown): boolean {
  return asSdkError(err)?.name === "PreconditionFailed" || statusOf(err) === 412;
}

import { posix } from "node:path";
import type { Readable } from "node:stream";
import {
  AbortMultipartUploadCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  S3Client,
  type HeadObjectCommandOutput,
  type S3ClientConfig,
  type PutObjectCommandInput,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { ConfigError, FilerelayError, SinkError, type ErrorCode, type Logger } from "@filerelay/core";
import type { Sink, SinkWriteRequest, SinkWriteResult } from "./sink.js";

/**
 * The S3 sink: streams each file into `S3_BUCKET` under `S3_PREFIX` with
 * lib-storage's multipart `Upload` (memory ≈ (S3_QUEUE_SIZE + 1) × S3_PART_SIZE),
 * then HEADs the object and checks size and sha256 metadata before reporting
 * success. Keyed by the environment variable names, so the producer's config
 * satisfies it as is.
 */
export interface S3SinkConfig {
  S3_BUCKET?: string | undefined;
  /** Prepended to the organized path; a missing trailing '/' is added. */
  S3_PREFIX?: string | undefined;
  S3_ENDPOINT?: string | undefined;
  S3_REGION?: string | undefined;
  S3_FORCE_PATH_STYLE?: boolean | undefined;
  S3_PART_SIZE?: number | undefined;
  S3_QUEUE_SIZE?: number | undefined;
  S3_CHECKSUM?: "none" | "sha256" | undefined;
  /** Default: when_required if S3_ENDPOINT is set (non-AWS stores), else when_supported. */
  S3_CHECKSUM_MODE?: "when_supported" | "when_required" | undefined;
  ON_CONFLICT?: "rename" | "overwrite" | "skip" | "fail" | undefined;
}

export interface S3SinkDeps {
  log: Logger;
  /** Default: the standard AWS provider chain (env, shared files, web identity, instance metadata). */
  credentials?: S3ClientConfig["credentials"];
  /** A ready client (tests, embedding); the sink then does not destroy it on close. */
  client?: S3Client;
  /** Incomplete multipart uploads older than this are aborted by init(). Default 24 h. */
  staleUploadAgeMs?: number;
}

export const DEFAULT_PART_SIZE = 8 * 1024 * 1024;
export const DEFAULT_QUEUE_SIZE = 4;
const MIN_PART_SIZE = 5 * 1024 * 1024;
const MAX_PARTS = 10_000;
const MAX_KEY_BYTES = 1024;
const MAX_NAME_BYTES = 255;
const MAX_RENAMES = 10_000;
const DEFAULT_STALE_UPLOAD_AGE_MS = 24 * 60 * 60 * 1000;

/** User metadata names (stored as x-amz-meta-*). */
export const S3_METADATA = {
  id: "filerelay-id",
  source: "filerelay-source",
  sha256: "filerelay-sha256",
  filename: "filerelay-filename",
} as const;

/**
 * Metadata travels in HTTP headers, which must be printable ASCII: anything
 * else (and '%', so it stays reversible) is percent-encoded. Read back with
 * decodeURIComponent.
 */
export function encodeMetadataValue(value: string): string {
  return value.replace(/[^\x20-\x7e]|%/gu, (c) => encodeURIComponent(c));
}

export function checksumMode(config: S3SinkConfig): "when_supported" | "when_required" {
  return config.S3_CHECKSUM_MODE ?? (config.S3_ENDPOINT ? "when_required" : "when_supported");
}

/** The client the sink uses, exported so tests can wrap it with middleware. */
export function createS3Client(config: S3SinkConfig, credentials?: S3ClientConfig["credentials"]): S3Client {
  // s3rver stores aws-chunked framing inside the object, older MinIO and R2
  // reject the flexible-checksum headers: only send checksums when required.
  const mode = checksumMode(config) === "when_required" ? "WHEN_REQUIRED" : "WHEN_SUPPORTED";
  return new S3Client({
    ...(config.S3_ENDPOINT ? { endpoint: config.S3_ENDPOINT } : {}),
    // Custom endpoints (MinIO, s3rver) rarely care about the region; AWS needs the real one.
    region: config.S3_REGION ?? (config.S3_ENDPOINT ? "us-east-1" : undefined),
    forcePathStyle: config.S3_FORCE_PATH_STYLE ?? false,
    ...(credentials ? { credentials } : {}),
    requestChecksumCalculation: mode,
    responseChecksumValidation: mode,
    // A hung store must fail the attempt (and nak), not hold the message forever.
    requestHandler: { connectionTimeout: 10_000, requestTimeout: 120_000 },
  });
}

/** Normalized prefix: no leading '/', a trailing '/' unless empty. */
export function normalizePrefix(prefix: string | undefined): string {
  const p = (prefix ?? "").replace(/^\/+/, "");
  return p === "" || p.endsWith("/") ? p : `${p}/`;
}

// eslint-disable-next-line no-control-regex -- matching control characters is the point
const unsafeKeyChars = /[\u0000-\u001f\u007f\\]/;

/**
 * The object key for an organized path. The organizer already sanitized it;
 * this is the last line of defence so nothing lands outside S3_PREFIX (some
 * gateways and sync tools resolve '..' in keys).
 */
export function objectKey(prefix: string, path: string): string {
  const segments = path.split("/");
  if (path.startsWith("/") || unsafeKeyChars.test(path) || segments.some((s) => s === "" || s === "." || s === "..")) {
    throw new SinkError("PATH_UNSAFE", `refusing S3 key for unsafe path ${JSON.stringify(path)}`);
  }
  const key = prefix + path;
  if (Buffer.byteLength(key) > MAX_KEY_BYTES)
    throw new SinkError("NAME_INVALID", `S3 key is longer than ${MAX_KEY_BYTES} bytes: ${JSON.stringify(key)}`);
  return key;
}

/**
 * `a/report.csv` → `a/report-2.csv`: the suffix goes before the extension and
 * the stem is shortened (on a UTF-8 boundary) so the name stays within 255
 * bytes, as the fs sink does.
 */
export function withSuffix(path: string, n: number): string {
  const slash = path.lastIndexOf("/");
  const dir = path.slice(0, slash + 1);
  const base = path.slice(slash + 1);
  const ext = posix.extname(base);
  const suffix = `-${n}${ext}`;
  let stem = base.slice(0, base.length - ext.length);
  while (Buffer.byteLength(stem) + Buffer.byteLength(suffix) > MAX_NAME_BYTES) stem = [...stem].slice(0, -1).join("");
  return dir + stem + suffix;
}

interface SdkError extends Error {
  $metadata?: { httpStatusCode?: number };
}

function asSdkError(err: unknown): SdkError | undefined {
  return err instanceof Error ? err : undefined;
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

function isNotFound(err: unknown): boolean {
  const name = asSdkError(err)?.name;
  return name === "NotFound" || name === "NoSuchKey" || statusOf(err) === 404;
}

function isUnsupported(err: unknown): boolean {
  const name = asSdkError(err)?.name;
  const status = statusOf(err);
  return name === "NotImplemented" || name === "MethodNotAllowed" || status === 501 || status === 405;
}

type Existing = { kind: "absent" } | { kind: "same" } | { kind: "ours-broken" } | { kind: "different" };

export function createS3Sink(config: S3SinkConfig, deps: S3SinkDeps): Sink {
  const bucket = config.S3_BUCKET;
  if (!bucket) throw new ConfigError(["S3_BUCKET: required when SINK=s3"]);
  const prefix = normalizePrefix(config.S3_PREFIX);
  const partSizeSetting = Math.max(config.S3_PART_SIZE ?? DEFAULT_PART_SIZE, MIN_PART_SIZE);
  const queueSize = Math.max(config.S3_QUEUE_SIZE ?? DEFAULT_QUEUE_SIZE, 1);
  const onConflict = config.ON_CONFLICT ?? "rename";
  const useSha256 = config.S3_CHECKSUM === "sha256";
  const staleAgeMs = deps.staleUploadAgeMs ?? DEFAULT_STALE_UPLOAD_AGE_MS;
  const ownsClient = deps.client === undefined;
  const client = deps.client ?? createS3Client(config, deps.credentials);
  const log = deps.log;
  let abortUnsupportedWarned = false;
  let closed = false;

  const location = (key: string) => `s3://${bucket}/${key}`;

  const head = async (key: string): Promise<HeadObjectCommandOutput | undefined> => {
    try {
      return await client.send(
        new HeadObjectCommand({ Bucket: bucket, Key: key, ...(useSha256 ? { ChecksumMode: "ENABLED" } : {}) }),
      );
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw toSinkError(err, "HeadObject", bucket, key);
    }
  };

  const classify = (obj: HeadObjectCommandOutput | undefined, req: SinkWriteRequest): Existing => {
    if (!obj) return { kind: "absent" };
    const sha = obj.Metadata?.[S3_METADATA.sha256];
    const sameVersion = sha === req.envelope.sha256 || obj.Metadata?.[S3_METADATA.id] === req.envelope.id;
    if (!sameVersion) return { kind: "different" };
    // Same file version (by content or by ce-id) but not the right bytes: an earlier,
    // interrupted attempt of ours stored a bad object; replace it rather than add "-1".
    return sha === req.envelope.sha256 && obj.ContentLength === req.envelope.size
      ? { kind: "same" }
      : { kind: "ours-broken" };
  };

  const abortMultipart = async (key: string, uploadId: string, reqLog: Logger): Promise<void> => {
    try {
      await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId }));
    } catch (err) {
      if (isUnsupported(err)) {
        if (!abortUnsupportedWarned) {
          abortUnsupportedWarned = true;
          log.warn(
            { bucket, s3Error: asSdkError(err)?.name },
            "this S3 store cannot abort multipart uploads: parts of failed uploads may stay until a lifecycle rule removes them",
          );
        }
      } else {
        reqLog.warn({ err, key, uploadId }, "could not abort a failed multipart upload");
      }
    }
  };

  const upload = async (req: SinkWriteRequest, key: string, createOnly: boolean): Promise<void> => {
    const { envelope } = req;
    // Keep within S3's 10,000-part limit for very large files.
    const partSize = Math.max(partSizeSetting, Math.ceil(envelope.size / MAX_PARTS));
    const abortController = new AbortController();
    const onAbort = () => abortController.abort();
    req.signal.addEventListener("abort", onAbort, { once: true });
    const body: Readable = req.open();
    const params: PutObjectCommandInput = {
      Bucket: bucket,
      Key: key,
      Body: body,
      ContentLength: envelope.size,
      ContentType: envelope.contentType,
      Metadata: {
        [S3_METADATA.id]: envelope.id,
        [S3_METADATA.source]: encodeMetadataValue(envelope.source),
        [S3_METADATA.sha256]: envelope.sha256,
        [S3_METADATA.filename]: encodeMetadataValue(envelope.filename),
      },
      ...(useSha256 ? { ChecksumAlgorithm: "SHA256" as const } : {}),
      // Where conditional writes exist, a concurrent writer of the same key loses with 412 instead of overwriting.
      ...(createOnly ? { IfNoneMatch: "*" } : {}),
    };
    const up = new Upload({ client, params, partSize, queueSize, leavePartsOnError: true, abortController });
    up.on("httpUploadProgress", () => req.progress());
    try {
      if (req.signal.aborted) abortController.abort();
      await up.done();
    } catch (err) {
      // leavePartsOnError: we abort ourselves, so a failing abort cannot hide the real error.
      if (up.uploadId) await abortMultipart(key, up.uploadId, req.log);
      if (req.signal.aborted) {
        const reason: unknown = req.signal.reason;
        throw reason instanceof FilerelayError
          ? reason
          : new SinkError("SHUTDOWN", `upload of ${location(key)} aborted`, { cause: reason ?? err });
      }
      if (asSdkError(err)?.name === "PreconditionFailed" || statusOf(err) === 412) {
        throw new SinkError("S3_UPLOAD_FAILED", `${location(key)} was created concurrently by another writer`, {
          cause: err,
        });
      }
      throw toSinkError(err, "upload", bucket, key);
    } finally {
      req.signal.removeEventListener("abort", onAbort);
      if (!body.destroyed) body.destroy();
    }
  };

  const verify = async (req: SinkWriteRequest, key: string): Promise<void> => {
    const obj = await head(key);
    const problems: string[] = [];
    if (!obj) problems.push("object is missing after upload");
    else {
      if (obj.ContentLength !== req.envelope.size)
        problems.push(`size ${String(obj.ContentLength)} ≠ ${req.envelope.size}`);
      const sha = obj.Metadata?.[S3_METADATA.sha256];
      if (sha !== req.envelope.sha256) problems.push(`${S3_METADATA.sha256} ${String(sha)} ≠ ${req.envelope.sha256}`);
      // A full-object SHA-256 (single PUT) must equal ours; multipart ones ("…-N") are checksums of parts.
      const stored = obj.ChecksumSHA256;
      const expected = Buffer.from(req.envelope.sha256, "hex").toString("base64");
      if (stored && !stored.includes("-") && stored !== expected)
        problems.push(`ChecksumSHA256 ${stored} ≠ ${expected}`);
    }
    if (problems.length > 0) {
      throw new SinkError("S3_VERIFY_FAILED", `${location(key)} does not match after upload: ${problems.join("; ")}`, {
        details: { bucket, key, problems },
      });
    }
  };

  const write = async (req: SinkWriteRequest): Promise<SinkWriteResult> => {
    if (closed) throw new SinkError("SHUTDOWN", "the S3 sink is closed");
    const baseKey = objectKey(prefix, req.path);
    let key = baseKey;
    let state = classify(await head(key), req);
    if (state.kind === "same") return { outcome: "duplicate", location: location(key), bytes: req.envelope.size };
    if (state.kind === "different") {
      switch (onConflict) {
        case "skip":
          req.log.info({ key }, "target exists with different content; ON_CONFLICT=skip");
          return { outcome: "skipped", location: location(key), bytes: 0 };
        case "fail":
          throw new SinkError("CONFLICT", `${location(key)} exists with different content and ON_CONFLICT=fail`, {
            details: { bucket, key },
          });
        case "overwrite":
          break;
        case "rename": {
          let n = 1;
          for (; state.kind === "different"; n++) {
            if (n > MAX_RENAMES)
              throw new SinkError("CONFLICT", `no free name for ${location(baseKey)} after ${MAX_RENAMES} tries`);
            key = objectKey(prefix, withSuffix(req.path, n));
            state = classify(await head(key), req);
          }
          if (state.kind === "same") return { outcome: "duplicate", location: location(key), bytes: req.envelope.size };
          break;
        }
      }
    }
    const createOnly = state.kind === "absent";
    await upload(req, key, createOnly);
    req.progress();
    await verify(req, key);
    return { outcome: "written", location: location(key), bytes: req.envelope.size };
  };

  const abortStaleUploads = async (): Promise<void> => {
    const cutoff = Date.now() - staleAgeMs;
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    let aborted = 0;
    try {
      for (;;) {
        const page = await client.send(
          new ListMultipartUploadsCommand({
            Bucket: bucket,
            Prefix: prefix,
            KeyMarker: keyMarker,
            UploadIdMarker: uploadIdMarker,
          }),
        );
        for (const u of page.Uploads ?? []) {
          if (!u.Key || !u.UploadId || !u.Initiated || u.Initiated.getTime() > cutoff) continue;
          await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: u.Key, UploadId: u.UploadId }));
          aborted++;
        }
        if (!page.IsTruncated) break;
        keyMarker = page.NextKeyMarker;
        uploadIdMarker = page.NextUploadIdMarker;
      }
      if (aborted > 0) log.info({ bucket, prefix, aborted }, "aborted stale incomplete multipart uploads");
    } catch (err) {
      // Start-up must not depend on housekeeping: say why and carry on.
      if (isUnsupported(err))
        log.warn({ bucket }, "this S3 store cannot list multipart uploads: stale-upload cleanup skipped");
      else log.warn({ bucket, err: toSinkError(err, "ListMultipartUploads", bucket) }, "stale-upload cleanup failed");
    }
  };

  const checkReady = async (): Promise<void> => {
    try {
      await client.send(new HeadBucketCommand({ Bucket: bucket }));
    } catch (err) {
      // HEAD responses have no body: a 404 here can only mean the bucket.
      if (isNotFound(err))
        throw new SinkError(
          "S3_NO_SUCH_BUCKET",
          `S3 bucket ${JSON.stringify(bucket)} does not exist: create it or fix S3_BUCKET`,
          {
            cause: err,
            details: { bucket },
          },
        );
      throw toSinkError(err, "HeadBucket", bucket);
    }
  };

  const close = (): Promise<void> => {
    if (closed) return Promise.resolve();
    closed = true;
    if (ownsClient) client.destroy();
    return Promise.resolve();
  };

  return {
    kind: "s3",
    init: async () => {
      log.info(
        {
          bucket,
          prefix,
          endpoint: config.S3_ENDPOINT,
          partSize: partSizeSetting,
          queueSize,
          checksum: config.S3_CHECKSUM ?? "none",
          checksumMode: checksumMode(config),
          onConflict,
        },
        "S3 sink configured",
      );
      await abortStaleUploads();
    },
    write,
    checkReady,
    close,
    [Symbol.asyncDispose]: close,
  };
}

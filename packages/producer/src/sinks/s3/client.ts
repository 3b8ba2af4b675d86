import { S3Client, type S3ClientConfig } from "@aws-sdk/client-s3";
import type { Logger } from "@filerelay/core";
import type { ConflictMode } from "../../config.js";

/**
 * The S3 sink's settings, keyed by the environment variable names, so the
 * producer's config satisfies it as is.
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
  ON_CONFLICT?: ConflictMode | undefined;
  /** Buckets an envelope's ce-destination may name instead of S3_BUCKET (unset: ce-destination is ignored). */
  S3_ALLOWED_BUCKETS?: readonly string[] | undefined;
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

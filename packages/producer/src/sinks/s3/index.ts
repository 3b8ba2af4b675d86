/** The S3 sink (SINK=s3) and the pieces its tests use. */
export { createS3Sink, targetBucket } from "./s3Sink.js";
export { checksumMode, createS3Client, type S3SinkConfig, type S3SinkDeps } from "./client.js";
export { toSinkError } from "./errors.js";
export { normalizePrefix, objectKey } from "./keys.js";
export { encodeMetadataValue, S3_METADATA } from "./metadata.js";
export { DEFAULT_PART_SIZE, DEFAULT_QUEUE_SIZE } from "./upload.js";
export { objectState, verifyProblems } from "./verify.js";

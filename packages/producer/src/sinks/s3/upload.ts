import type { Readable } from "node:stream";
import {
  AbortMultipartUploadCommand,
  ListMultipartUploadsCommand,
  type PutObjectCommandInput,
  type S3Client,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { FilerelayError, SinkError, type Logger } from "@filerelay/core";
import type { SinkWriteRequest } from "../sink.js";
import { isPreconditionFailed, isUnsupported, s3ErrorName, toSinkError } from "./errors.js";
import { objectMetadata } from "./metadata.js";

export const DEFAULT_PART_SIZE = 8 * 1024 * 1024;
export const DEFAULT_QUEUE_SIZE = 4;
const MIN_PART_SIZE = 5 * 1024 * 1024;
const MAX_PARTS = 10_000;

export interface UploaderOptions {
  client: S3Client;
  bucket: string;
  /** S3_PART_SIZE (raised to S3's 5 MiB minimum). */
  partSize?: number | undefined;
  /** S3_QUEUE_SIZE: parts in flight per upload. */
  queueSize?: number | undefined;
  /** S3_CHECKSUM=sha256: the store checks a SHA-256 of each part. */
  useSha256: boolean;
  log: Logger;
}

/**
 * Streams objects into the bucket with lib-storage's multipart Upload
 * (memory ≈ (queueSize + 1) × partSize), and keeps incomplete multipart
 * uploads from piling up: aborted on failure, and stale ones at start-up.
 */
export interface Uploader {
  readonly partSize: number;
  readonly queueSize: number;
  /** Uploads the payload of `req` to `key`; `createOnly` makes a concurrent creation of the key fail it. */
  upload(req: SinkWriteRequest, key: string, createOnly: boolean): Promise<void>;
  /** Aborts incomplete multipart uploads under `prefix` older than `staleAgeMs`; never throws. */
  abortStaleUploads(prefix: string, staleAgeMs: number): Promise<void>;
}

export function createUploader(options: UploaderOptions): Uploader {
  const { client, bucket, useSha256, log } = options;
  const partSizeSetting = Math.max(options.partSize ?? DEFAULT_PART_SIZE, MIN_PART_SIZE);
  const queueSize = Math.max(options.queueSize ?? DEFAULT_QUEUE_SIZE, 1);
  let abortUnsupportedWarned = false;
  const location = (key: string) => `s3://${bucket}/${key}`;

  const abortMultipart = async (key: string, uploadId: string, reqLog: Logger): Promise<void> => {
    try {
      await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId }));
    } catch (err) {
      if (isUnsupported(err)) {
        if (!abortUnsupportedWarned) {
          abortUnsupportedWarned = true;
          log.warn(
            { bucket, s3Error: s3ErrorName(err) },
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
      Metadata: objectMetadata(envelope),
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
      if (isPreconditionFailed(err)) {
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

  const abortStaleUploads = async (prefix: string, staleAgeMs: number): Promise<void> => {
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

  return { partSize: partSizeSetting, queueSize, upload, abortStaleUploads };
}

import { HeadBucketCommand } from "@aws-sdk/client-s3";
import { ConfigError, SinkError } from "@filerelay/core";
import { conflictCandidate, conflictError, decideConflict, MAX_CONFLICT_SUFFIX } from "../conflictPolicy.js";
import type { Sink, SinkWriteRequest, SinkWriteResult } from "../sink.js";
import { checksumMode, createS3Client, type S3SinkConfig, type S3SinkDeps } from "./client.js";
import { isNotFound, toSinkError } from "./errors.js";
import { normalizePrefix, objectKey } from "./keys.js";
import { createUploader } from "./upload.js";
import { createObjectInspector } from "./verify.js";

const DEFAULT_STALE_UPLOAD_AGE_MS = 24 * 60 * 60 * 1000;

/**
 * The bucket a file goes to: its ce-destination when S3_ALLOWED_BUCKETS lists
 * it, else S3_BUCKET. A destination outside the list is not honoured (and the
 * caller logs it): the allow-list, not the publisher, decides where data may go.
 */
export function targetBucket(
  defaultBucket: string,
  allowed: readonly string[] | undefined,
  destination: string | undefined,
): { bucket: string; refused?: string } {
  if (destination === undefined || destination === defaultBucket) return { bucket: defaultBucket };
  if (allowed?.includes(destination)) return { bucket: destination };
  return { bucket: defaultBucket, refused: destination };
}

/**
 * The S3 sink: streams each file into `S3_BUCKET` under `S3_PREFIX` (upload.ts),
 * then HEADs the object and checks size and sha256 metadata before reporting
 * success (verify.ts). What is already under the key decides ON_CONFLICT
 * (conflictPolicy.ts): a redelivery of the same content is a duplicate, an
 * interrupted attempt of ours is replaced.
 */
export function createS3Sink(config: S3SinkConfig, deps: S3SinkDeps): Sink {
  const bucket = config.S3_BUCKET;
  if (!bucket) throw new ConfigError(["S3_BUCKET: required when SINK=s3"]);
  const prefix = normalizePrefix(config.S3_PREFIX);
  const onConflict = config.ON_CONFLICT ?? "rename";
  const useSha256 = config.S3_CHECKSUM === "sha256";
  const staleAgeMs = deps.staleUploadAgeMs ?? DEFAULT_STALE_UPLOAD_AGE_MS;
  const ownsClient = deps.client === undefined;
  const client = deps.client ?? createS3Client(config, deps.credentials);
  const log = deps.log;
  const forBucket = (name: string) => ({
    uploader: createUploader({
      client,
      bucket: name,
      partSize: config.S3_PART_SIZE,
      queueSize: config.S3_QUEUE_SIZE,
      useSha256,
      log,
    }),
    objects: createObjectInspector(client, name, useSha256),
    location: (key: string) => `s3://${name}/${key}`,
  });
  const main = forBucket(bucket);
  const { uploader } = main;
  // One uploader and inspector per destination bucket, made on first use (S3_ALLOWED_BUCKETS bounds them).
  const byBucket = new Map([[bucket, main]]);
  const target = (req: SinkWriteRequest) => {
    const chosen = targetBucket(bucket, config.S3_ALLOWED_BUCKETS, req.envelope.extensions?.destination);
    if (chosen.refused !== undefined) {
      req.log.warn(
        { destination: chosen.refused, bucket },
        "ce-destination is not in S3_ALLOWED_BUCKETS; writing to S3_BUCKET",
      );
    }
    let t = byBucket.get(chosen.bucket);
    if (!t) byBucket.set(chosen.bucket, (t = forBucket(chosen.bucket)));
    return { ...t, bucket: chosen.bucket };
  };
  let closed = false;

  /** The key to upload to and how, or the outcome when there is nothing to upload. */
  const place = async (
    req: SinkWriteRequest,
    { objects, location, bucket }: ReturnType<typeof target>,
  ): Promise<{ key: string; createOnly: boolean } | SinkWriteResult> => {
    const { envelope } = req;
    for (let n = 0; n <= MAX_CONFLICT_SUFFIX; n++) {
      const key = objectKey(prefix, conflictCandidate(req.path, n));
      const decision = decideConflict(onConflict, await objects.targetState(key, envelope));
      switch (decision.action) {
        case "write":
          return { key, createOnly: true };
        case "overwrite":
          return { key, createOnly: false };
        case "skip-identical":
          return { outcome: "duplicate", location: location(key), bytes: envelope.size };
        case "skip":
          req.log.info({ key }, "target exists with different content; ON_CONFLICT=skip");
          return { outcome: "skipped", location: location(key), bytes: 0 };
        case "fail":
          throw conflictError(decision.code, location(key), { bucket, key });
        case "rename-with-suffix":
          continue;
      }
    }
    const baseKey = objectKey(prefix, req.path);
    throw new SinkError("CONFLICT", `no free name for ${location(baseKey)} after ${MAX_CONFLICT_SUFFIX} tries`);
  };

  const write = async (req: SinkWriteRequest): Promise<SinkWriteResult> => {
    if (closed) throw new SinkError("SHUTDOWN", "the S3 sink is closed");
    const t = target(req);
    const placed = await place(req, t);
    if ("outcome" in placed) return placed;
    await t.uploader.upload(req, placed.key, placed.createOnly);
    req.progress();
    await t.objects.verify(placed.key, req.envelope);
    return { outcome: "written", location: t.location(placed.key), bytes: req.envelope.size };
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
          partSize: uploader.partSize,
          queueSize: uploader.queueSize,
          checksum: config.S3_CHECKSUM ?? "none",
          checksumMode: checksumMode(config),
          onConflict,
        },
        "S3 sink configured",
      );
      await uploader.abortStaleUploads(prefix, staleAgeMs);
    },
    write,
    checkReady,
    close,
    [Symbol.asyncDispose]: close,
  };
}

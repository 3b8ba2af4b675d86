import { HeadObjectCommand, type HeadObjectCommandOutput, type S3Client } from "@aws-sdk/client-s3";
import { SinkError, type Envelope } from "@filerelay/core";
import type { TargetState } from "../conflictPolicy.js";
import { isNotFound, toSinkError } from "./errors.js";
import { S3_METADATA } from "./metadata.js";

/**
 * What is stored under a key, read with HEAD: before an upload, to decide
 * ON_CONFLICT and recognise a redelivery (idempotency); after it, to check
 * the object is the file version before reporting success.
 */
export interface ObjectInspector {
  /** What the key holds for this file version. */
  targetState(key: string, envelope: Envelope): Promise<TargetState>;
  /** Throws S3_VERIFY_FAILED unless the key holds exactly this file version. */
  verify(key: string, envelope: Envelope): Promise<void>;
}

export function createObjectInspector(client: S3Client, bucket: string, useSha256: boolean): ObjectInspector {
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

  const targetState = async (key: string, envelope: Envelope): Promise<TargetState> =>
    objectState(await head(key), envelope);

  const verify = async (key: string, envelope: Envelope): Promise<void> => {
    const problems = verifyProblems(await head(key), envelope);
    if (problems.length > 0) {
      throw new SinkError(
        "S3_VERIFY_FAILED",
        `s3://${bucket}/${key} does not match after upload: ${problems.join("; ")}`,
        {
          details: { bucket, key, problems },
        },
      );
    }
  };

  return { targetState, verify };
}

/** What a HEAD response means for `envelope`. */
export function objectState(obj: HeadObjectCommandOutput | undefined, envelope: Envelope): TargetState {
  if (!obj) return "absent";
  const sha = obj.Metadata?.[S3_METADATA.sha256];
  const sameVersion = sha === envelope.sha256 || obj.Metadata?.[S3_METADATA.id] === envelope.id;
  if (!sameVersion) return "other";
  // Same file version (by content or by ce-id) but not the right bytes: an earlier,
  // interrupted attempt of ours stored a bad object; replace it rather than add "-1".
  return sha === envelope.sha256 && obj.ContentLength === envelope.size ? "same" : "ours-broken";
}

/** Why an uploaded object is not `envelope` (empty when it is). */
export function verifyProblems(obj: HeadObjectCommandOutput | undefined, envelope: Envelope): string[] {
  const problems: string[] = [];
  if (!obj) {
    problems.push("object is missing after upload");
    return problems;
  }
  if (obj.ContentLength !== envelope.size) problems.push(`size ${String(obj.ContentLength)} ≠ ${envelope.size}`);
  const sha = obj.Metadata?.[S3_METADATA.sha256];
  if (sha !== envelope.sha256) problems.push(`${S3_METADATA.sha256} ${String(sha)} ≠ ${envelope.sha256}`);
  // A full-object SHA-256 (single PUT) must equal ours; multipart ones ("…-N") are checksums of parts.
  const stored = obj.ChecksumSHA256;
  const expected = Buffer.from(envelope.sha256, "hex").toString("base64");
  if (stored && !stored.includes("-") && stored !== expected) problems.push(`ChecksumSHA256 ${stored} ≠ ${expected}`);
  return problems;
}

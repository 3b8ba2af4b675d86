import type { FileHandle } from "node:fs/promises";
import { jetstream, type JetStreamClient } from "@nats-io/jetstream";
import {
  buildEnvelope,
  computeFingerprint,
  fileVersionId,
  isFilerelayError,
  jetstreamNames,
  publishFile,
  SourceError,
  type Envelope,
  type FileMeta,
  type Logger,
  type NatsConnection,
  type StatusLedger,
} from "@filerelay/core/internal";
import type { Claim, ClaimStore } from "./claimStore.js";
import type { ConsumerConfig } from "./config.js";
import { dispositionStrategy, type DisposeResult } from "./disposition.js";
import { readChunks, sameContent, type Identity, type ReadVersion } from "./fileVersion.js";
import type { FingerprintStore } from "./fingerprintStore.js";
import type { TrackedFile } from "./trackedFile.js";

/** How long a publish may wait for its PubAck. */
const PUBLISH_TIMEOUT_MS = 5000;

/** A publish-side failure (claim, KV, upload, publish) that may be a broker outage. */
export class NetworkPhaseError extends SourceError {
  override name = "NetworkPhaseError";
}

/** The file changed while it was uploaded: nothing was published. */
class ChangedDuringUpload extends Error {}

export type PublishOutcome =
  | ({ kind: "published"; envelope: Envelope; duplicate: boolean } & DisposeResult)
  | ({ kind: "already"; envelope: Envelope } & DisposeResult)
  | { kind: "changed" }
  | { kind: "held" }
  | { kind: "abandoned" };

export interface VersionPublisherOptions {
  config: ConsumerConfig;
  nc: NatsConnection;
  claims: ClaimStore;
  fingerprints: FingerprintStore;
  log: Logger;
  /** Aborted when the consumer shuts down: uploads stop (their objects are purged). */
  signal: AbortSignal;
  /** True once shutting down: nothing new is published. */
  stopping: () => boolean;
  /** Keeps a background promise (a claim release) until it settles. */
  track: (p: Promise<unknown>) => void;
  /** The status ledger publishFile() records in (unset with STATUS=off). */
  status?: StatusLedger | undefined;
}

/**
 * Publishes one file version read from INPUT_DIR, once across restarts and
 * replicas: claim (KV create, with the fingerprint lookup in the same round
 * trip) → publishFile() → record the fingerprint, with the disposal of the
 * source running beside the record once the envelope is stored.
 */
export class VersionPublisher {
  readonly #o: VersionPublisherOptions;
  readonly #js: JetStreamClient;
  readonly #leavesFiles: boolean;
  readonly #payloadBucket: string;

  constructor(options: VersionPublisherOptions) {
    this.#o = options;
    this.#js = jetstream(options.nc, { timeout: PUBLISH_TIMEOUT_MS });
    this.#leavesFiles = dispositionStrategy(options.config) === "leave";
    this.#payloadBucket = jetstreamNames(options.config).payloadBucket;
  }

  /**
   * `read` is the checked version (its handle, for a file that is not inline,
   * is closed here); `release` frees the caller's slot at the PubAck;
   * `dispose` disposes of the source (after the PubAck, or at once when the
   * version was published before).
   */
  async publish(
    rec: TrackedFile,
    identity: Identity,
    read: Extract<ReadVersion, { kind: "read" }>,
    release: () => void,
    dispose: () => Promise<DisposeResult>,
  ): Promise<PublishOutcome> {
    const { config, claims, fingerprints } = this.#o;
    let fh = read.fh;
    try {
      const fingerprint = computeFingerprint({
        head: read.head,
        // Read whole anyway: the full digest, not just the head, tells this version apart.
        sha256: read.inline ? read.sha256 : undefined,
        size: identity.size,
        mtimeMs: identity.mtimeMs,
        ino: identity.ino,
        ctimeMs: identity.ctimeMs,
        source: config.SOURCE,
        relPath: rec.rel,
      });
      const id = fileVersionId(fingerprint);
      rec.fingerprint = fingerprint;
      rec.fileId = id;
      const meta: FileMeta = {
        id,
        source: config.SOURCE,
        subject: rec.rel,
        time: rec.detectedAt,
        mtime: new Date(identity.mtimeMs),
      };
      // A name no sink could accept fails here, before anything is sent (and an inline
      // file's envelope is sent as built here).
      const envelope = buildEnvelope(meta, {
        size: identity.size,
        sha256: read.sha256,
        payload: read.inline ? { kind: "inline" } : { kind: "object", bucket: this.#payloadBucket, name: id },
      });

      if (this.#o.stopping()) return { kind: "abandoned" };
      // Claim and lookup in one round trip. Safe because a claim is kept (not
      // deleted) after its version is published: it expires CLAIM_TTL_MS after
      // the publish (or once its holder's heartbeat stops), so a create that
      // succeeds comes after any earlier holder recorded its fingerprint, and
      // the lookup sent with it sees that.
      const [claimed, looked] = await Promise.allSettled([
        network("claim", () => claims.acquire(fingerprint)),
        network("fingerprint lookup", () => fingerprints.lookup(fingerprint)),
      ]);
      if (claimed.status === "rejected") throw claimed.reason;
      const claim = claimed.value;
      if (!claim) {
        // Held, e.g. by a replica that just published it. Nothing to decide when
        // the version is already published and stays in place; archiving or
        // deleting waits for the claim.
        const prior = looked.status === "fulfilled" ? looked.value : null;
        if (prior && this.#leavesFiles) {
          if (!envelope.sha256 && prior.sha256) envelope.sha256 = prior.sha256;
          rec.recordedAt = prior.recordedAtMs;
          return { kind: "already", envelope, disposition: "left" };
        }
        return { kind: "held" };
      }
      let keepClaim = false;
      try {
        if (looked.status === "rejected") throw looked.reason;
        const prior = looked.value;
        if (prior) {
          if (!envelope.sha256 && prior.sha256) envelope.sha256 = prior.sha256;
          rec.recordedAt = prior.recordedAtMs;
          const d = await dispose();
          keepClaim = true;
          return { kind: "already", envelope, ...d };
        }
        let published;
        try {
          published = await this.#publish(read, fh, identity, meta, claim, envelope);
        } catch (err) {
          if (err instanceof ChangedDuringUpload) return { kind: "changed" };
          throw err;
        }
        fh = undefined;
        // Only now may the source go: the envelope is stored. Recording and
        // archiving need no slot: the next file's read and publish start now.
        release();
        const [recorded, disposed] = await Promise.allSettled([
          fingerprints.record(fingerprint, {
            id,
            path: rec.rel,
            size: identity.size,
            sha256: published.sha256,
            publishedAt: new Date().toISOString(),
          }),
          dispose(),
        ]);
        if (recorded.status === "fulfilled") rec.recordedAt = Date.now();
        else {
          this.#o.log.warn(
            { fileId: id, path: rec.rel, err: recorded.reason as unknown },
            "could not record the fingerprint; a restart may publish this version again (same ce-id)",
          );
        }
        if (disposed.status === "rejected") throw disposed.reason;
        keepClaim = true;
        return { kind: "published", envelope: published.envelope, duplicate: published.duplicate, ...disposed.value };
      } finally {
        // A version that was published keeps its claim until it expires (no
        // delete request per file; see above). Otherwise the claim is given
        // back at once, so a retry elsewhere is not blocked; not awaited: an
        // unreleased claim expires anyway.
        if (!keepClaim) this.#o.track(claims.release(claim));
      }
    } finally {
      await fh?.close().catch(() => undefined);
    }
  }

  /**
   * publishFile() with what the consumer adds: the claim kept alive during a
   * long upload, the file re-checked after it (a change means nothing is
   * published), and errors sorted into the file's fault or the broker's.
   */
  async #publish(
    read: Extract<ReadVersion, { kind: "read" }>,
    fh: FileHandle | undefined,
    identity: Identity,
    meta: FileMeta,
    claim: Claim,
    envelope: Envelope,
  ) {
    const { config, claims, nc, log } = this.#o;
    // Only a long upload needs the claim kept alive (and a way to stop when it is lost).
    const lost = fh ? new AbortController() : undefined;
    const refresher = fh
      ? setInterval(
          () => {
            claims.refresh(claim).then(
              (ok) => {
                if (!ok) lost?.abort(new Error("publish claim lost"));
              },
              (err: unknown) => log.debug({ err, fileId: meta.id }, "claim refresh failed"),
            );
          },
          Math.max(500, Math.floor(claims.ttlMs / 3)),
        )
      : undefined;
    try {
      return await publishFile(
        nc,
        fh ? readFailures(readChunks(fh, config.PAYLOAD_CHUNK_BYTES), meta.subject) : (read.body ?? Buffer.alloc(0)),
        meta,
        {
          js: this.#js,
          subject: config.SUBJECT,
          stream: config.STREAM,
          inlineMaxBytes: config.INLINE_MAX_BYTES,
          chunkBytes: config.PAYLOAD_CHUNK_BYTES,
          // readChunks allocates a new buffer for every chunk it yields.
          freshBuffers: true,
          signal: lost ? AbortSignal.any([this.#o.signal, lost.signal]) : this.#o.signal,
          envelope,
          status: this.#o.status,
          expectedSize: identity.size,
          beforePublish: async (envelope) => {
            if (!fh) return;
            const after = await fh.stat();
            if (envelope.size !== identity.size || !sameContent(after, identity)) throw new ChangedDuringUpload();
          },
        },
      );
    } catch (err) {
      if (err instanceof ChangedDuringUpload) throw err;
      if (lost?.signal.aborted && !this.#o.signal.aborted) {
        throw new NetworkPhaseError("PUBLISH_FAILED", "publish claim lost during the upload", { cause: err });
      }
      // Upload failures are judged by the caller (outage or not); read errors are the file's.
      if (isFilerelayError(err) && err.code !== "PAYLOAD_UPLOAD_FAILED") throw err;
      throw new NetworkPhaseError("PUBLISH_FAILED", "publish failed", { cause: err });
    } finally {
      clearInterval(refresher);
      if (fh) await fh.close().catch(() => undefined);
    }
  }
}

/** Runs a broker-side step; its failures are candidates for "outage, not the file's fault". */
async function network<T>(step: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (isFilerelayError(err) && !(err.code === "PAYLOAD_UPLOAD_FAILED")) throw err;
    throw new NetworkPhaseError("PUBLISH_FAILED", `${step} failed`, { cause: err });
  }
}

/** Read errors during an upload are the file's fault, not the broker's: say so in their type. */
async function* readFailures(chunks: AsyncGenerator<Buffer>, rel: string): AsyncGenerator<Buffer> {
  try {
    yield* chunks;
  } catch (err) {
    throw new SourceError("FILE_READ_FAILED", `reading ${rel} failed during the upload`, { cause: err });
  }
}

import { jetstream, type JetStreamClient } from "@nats-io/jetstream";
import {
  contentTypeFor,
  publishFile,
  type FileMeta,
  type NatsConnection,
  type PublishFileOptions,
  type PublishFileResult,
  type StatusLedger,
} from "@filerelay/core";
import type { GatewayConfig } from "./config.js";
import { HttpError } from "./httpError.js";
import type { GatewayMetrics, UploadApi } from "./metrics.js";
import { contentTypeAllowed } from "./paths.js";

type Body = Uint8Array | AsyncIterable<Uint8Array>;

/** What an upload API answers for each published file. */
export interface PublishedFile {
  file_id: string;
  filename: string;
  size: number;
  sha256: string;
  status_url: string;
}

export function publishedFile(result: PublishFileResult): PublishedFile {
  return {
    file_id: result.id,
    filename: result.envelope.filename,
    size: result.size,
    sha256: result.sha256,
    status_url: `/api/v1/files/${result.id}/status`,
  };
}

export interface PublishExtra {
  api: UploadApi;
  beforePublish?: PublishFileOptions["beforePublish"];
  onProgress?: (bytes: number) => void;
  signal?: AbortSignal;
  /** The content's size when known beforehand (chunked, tus, jobs): the total of its byte progress. */
  expectedSize?: number;
}

/**
 * Every upload API ends here: publishFile() with the gateway's subject,
 * stream and payload settings, one JetStream client for all, and the
 * counters. The content type check (415) and byte limit (413) live here too,
 * so no API can skip them.
 */
export class Publisher {
  readonly #nc: NatsConnection;
  readonly #config: GatewayConfig;
  readonly #metrics: GatewayMetrics;
  readonly #js: JetStreamClient;
  /** The status ledger (undefined with STATUS=off). */
  readonly status: StatusLedger | undefined;

  constructor(nc: NatsConnection, config: GatewayConfig, metrics: GatewayMetrics, status?: StatusLedger) {
    this.#nc = nc;
    this.#config = config;
    this.#metrics = metrics;
    this.#js = jetstream(nc, { timeout: 10_000 });
    this.status = status;
  }

  /** Byte progress of an upload still arriving (throttled by the ledger; nothing with STATUS=off). */
  progress(id: string, bytes: number, total: number | null): void {
    this.status?.progress(id, bytes, total);
  }

  get inlineMaxBytes(): number {
    return this.#config.INLINE_MAX_BYTES;
  }

  /** 415 unless the type a file of this name gets (from its extension) is allowed. */
  checkContentType(filename: string): string {
    const type = contentTypeFor(filename);
    if (!contentTypeAllowed(type, this.#config.ALLOWED_CONTENT_TYPES)) {
      throw new HttpError(
        415,
        "CONTENT_TYPE_NOT_ALLOWED",
        `content type ${type} of ${JSON.stringify(filename)} is not in ALLOWED_CONTENT_TYPES`,
      );
    }
    return type;
  }

  /** 413 when a declared size is over MAX_UPLOAD_SIZE. */
  checkSize(size: number): void {
    if (size > this.#config.MAX_UPLOAD_SIZE) throw tooLarge(this.#config.MAX_UPLOAD_SIZE);
  }

  /** Counts a body's bytes, failing with 413 past MAX_UPLOAD_SIZE. */
  limit(
    body: AsyncIterable<Uint8Array>,
    api: UploadApi,
    onBytes?: (total: number) => void,
  ): AsyncGenerator<Uint8Array> {
    return limitBytes(body, this.#config.MAX_UPLOAD_SIZE, (n, total) => {
      this.#metrics.uploadBytes.inc({ api }, n);
      onBytes?.(total);
    });
  }

  async publish(body: Body, meta: FileMeta, extra: PublishExtra): Promise<PublishFileResult> {
    this.checkContentType(meta.filename ?? meta.subject);
    try {
      const result = await publishFile(this.#nc, body, meta, {
        subject: this.#config.SUBJECT,
        stream: this.#config.STREAM,
        inlineMaxBytes: this.#config.INLINE_MAX_BYTES,
        chunkBytes: this.#config.PAYLOAD_CHUNK_BYTES,
        js: this.#js,
        timeoutMs: 10_000,
        ...(extra.beforePublish ? { beforePublish: extra.beforePublish } : {}),
        ...(extra.onProgress ? { onProgress: extra.onProgress } : {}),
        ...(extra.signal ? { signal: extra.signal } : {}),
        ...(extra.expectedSize !== undefined ? { expectedSize: extra.expectedSize } : {}),
        ...(this.status ? { status: this.status } : {}),
      });
      this.#metrics.filesPublished.inc({ api: extra.api, outcome: result.duplicate ? "duplicate" : "published" });
      return result;
    } catch (err) {
      this.#metrics.filesPublished.inc({ api: extra.api, outcome: "failed" });
      throw err;
    }
  }
}

export function tooLarge(max: number): HttpError {
  return new HttpError(413, "UPLOAD_TOO_LARGE", `the upload exceeds MAX_UPLOAD_SIZE (${max} bytes)`);
}

/** Passes `body` through, failing with 413 once more than `max` bytes went by. */
export async function* limitBytes(
  body: AsyncIterable<Uint8Array>,
  max: number,
  onChunk?: (bytes: number, total: number) => void,
): AsyncGenerator<Uint8Array> {
  let total = 0;
  for await (const chunk of body) {
    total += chunk.length;
    if (total > max) throw tooLarge(max);
    onChunk?.(chunk.length, total);
    yield chunk;
  }
}

import type { FastifyInstance } from "fastify";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { createHash } from "node:crypto";
import type { PublishFileResult } from "@filerelay/core";
import type { Principal } from "../apiKeys.js";
import type { ChunkManifest, ChunkStore } from "../chunked/chunkStore.js";
import { DEFAULT_CHUNK_SIZE, missingChunks, totalChunks } from "../chunked/plan.js";
import type { GatewayConfig } from "../config.js";
import { HttpError } from "../httpError.js";
import type { GatewayMetrics } from "../metrics.js";
import { uploadSubject } from "../paths.js";
import { publishedFile, type Publisher } from "../publisher.js";
import {
  chunkInitReplySchema,
  chunkInitSchema,
  chunkQuerySchema,
  chunkReplySchema,
  completeQuerySchema,
  errorSchema,
  fileIdParams,
  publishedFileSchema,
} from "../schemas.js";

export interface ChunkedDeps {
  config: GatewayConfig;
  store: ChunkStore;
  publisher: Publisher;
  metrics: GatewayMetrics;
}

/**
 * The chunked upload API: init → PUT chunks (any order, any number of
 * retries; a re-sent chunk replaces the earlier one) → complete, which checks
 * that every chunk is there, then streams them in order into publishFile()
 * under the file_id given at init (its ce-id), checking the size and the
 * declared SHA-256 before the envelope is published.
 */
export function registerChunkedRoutes(app: FastifyInstance, deps: ChunkedDeps): void {
  const { config, store, publisher, metrics } = deps;
  const api = app.withTypeProvider<ZodTypeProvider>();
  const completing = new Map<string, Promise<PublishFileResult>>();

  api.post(
    "/api/v1/files/upload/init",
    {
      config: { role: "upload" },
      schema: {
        summary: "Start a chunked upload",
        tags: ["upload"],
        body: chunkInitSchema,
        response: { 201: chunkInitReplySchema, 400: errorSchema, 413: errorSchema, 415: errorSchema },
      },
    },
    async (request, reply) => {
      const principal = request.principal!;
      const { filename, size, sha256, path } = request.body;
      publisher.checkSize(size);
      const subject = uploadSubject(filename, path);
      const name = subject.slice(subject.lastIndexOf("/") + 1);
      publisher.checkContentType(name);
      const chunkSize = request.body.chunk_size ?? DEFAULT_CHUNK_SIZE;
      if (chunkSize > config.UPLOAD_CHUNK_MAX) {
        throw new HttpError(400, "REQUEST_INVALID", `chunk_size exceeds UPLOAD_CHUNK_MAX (${config.UPLOAD_CHUNK_MAX})`);
      }
      const manifest = await store.create({
        filename: name,
        subject,
        size,
        chunkSize,
        sha256: sha256?.toLowerCase() ?? null,
        source: principal.source,
        key: principal.name,
      });
      return reply.code(201).send({
        file_id: manifest.fileId,
        upload_id: manifest.uploadId,
        chunk_size: chunkSize,
        total_chunks: totalChunks(manifest),
        expires_at: new Date(Date.parse(manifest.createdAt) + config.UPLOAD_EXPIRY).toISOString(),
      });
    },
  );

  api.put(
    "/api/v1/files/upload/:file_id/chunk",
    {
      config: { role: "upload" },
      schema: {
        summary: "Send one chunk (raw bytes, application/octet-stream); re-sending replaces it",
        tags: ["upload"],
        params: fileIdParams,
        querystring: chunkQuerySchema,
        consumes: ["application/octet-stream"],
        response: { 200: chunkReplySchema, 400: errorSchema, 404: errorSchema },
      },
    },
    async (request) => {
      const manifest = await openOwned(store, request.params.file_id, request.query.upload_id, request.principal!);
      if (await store.done(manifest.fileId)) {
        throw new HttpError(400, "REQUEST_INVALID", "the upload is already complete");
      }
      const n = request.query.chunk_number;
      metrics.activeUploads.inc({ api: "chunked" });
      try {
        await store.writeChunk(
          manifest,
          n,
          publisher.limit(request.raw, "chunked", () => undefined),
        );
      } finally {
        metrics.activeUploads.dec({ api: "chunked" });
      }
      const received = (await store.received(manifest.fileId)).length;
      // Chunks are equal-sized but the last: close enough for a progress bar, exact when all arrived.
      publisher.progress(manifest.fileId, Math.min(received * manifest.chunkSize, manifest.size), manifest.size);
      return {
        file_id: manifest.fileId,
        chunk_number: n,
        received_chunks: received,
        total_chunks: totalChunks(manifest),
      };
    },
  );

  api.post(
    "/api/v1/files/upload/:file_id/complete",
    {
      config: { role: "upload" },
      schema: {
        summary: "Check size and SHA-256, publish, answer after the PubAck",
        tags: ["upload"],
        params: fileIdParams,
        querystring: completeQuerySchema,
        response: { 201: publishedFileSchema, 200: publishedFileSchema, 404: errorSchema, 409: errorSchema },
      },
    },
    async (request, reply) => {
      const manifest = await openOwned(store, request.params.file_id, request.query.upload_id, request.principal!);
      const done = await store.done(manifest.fileId);
      if (done) return reply.code(200).send(done);
      let running = completing.get(manifest.fileId);
      if (!running) {
        running = complete(manifest).finally(() => completing.delete(manifest.fileId));
        completing.set(manifest.fileId, running);
      }
      const answer = publishedFile(await running);
      return reply.code(201).send(answer);
    },
  );

  async function complete(manifest: ChunkManifest): Promise<PublishFileResult> {
    const missing = missingChunks(manifest, await store.received(manifest.fileId));
    if (missing.length > 0) {
      const shown = missing.slice(0, 20).join(", ");
      throw new HttpError(
        409,
        "UPLOAD_INCOMPLETE",
        `${missing.length} chunk(s) missing: ${shown}${missing.length > 20 ? ", …" : ""}`,
      );
    }
    const meta = {
      id: manifest.fileId,
      source: manifest.source,
      subject: manifest.subject,
      filename: manifest.filename,
    };
    const mismatch = (actual: string) =>
      new HttpError(422, "CHECKSUM_MISMATCH", `SHA-256 of the assembled file is ${actual}, not ${manifest.sha256}`);
    metrics.activeUploads.inc({ api: "chunked" });
    try {
      let result: PublishFileResult;
      if (manifest.size <= publisher.inlineMaxBytes) {
        const parts: Buffer[] = [];
        for await (const c of store.content(manifest)) parts.push(Buffer.from(c));
        const bytes = Buffer.concat(parts);
        const actual = createHash("sha256").update(bytes).digest("hex");
        if (manifest.sha256 && actual !== manifest.sha256) throw mismatch(actual);
        if (bytes.length !== manifest.size) throw sizeMismatch(bytes.length, manifest.size);
        result = await publisher.publish(bytes, meta, { api: "chunked" });
      } else {
        result = await publisher.publish(store.content(manifest), meta, {
          api: "chunked",
          expectedSize: manifest.size,
          beforePublish: (envelope) => {
            if (envelope.size !== manifest.size) throw sizeMismatch(envelope.size, manifest.size);
            if (manifest.sha256 && envelope.sha256 !== manifest.sha256) throw mismatch(envelope.sha256);
          },
        });
      }
      await store.markDone(manifest, publishedFile(result));
      return result;
    } finally {
      metrics.activeUploads.dec({ api: "chunked" });
    }
  }
}

function sizeMismatch(actual: number, declared: number): HttpError {
  return new HttpError(422, "CHECKSUM_MISMATCH", `the assembled file has ${actual} bytes, init declared ${declared}`);
}

async function openOwned(
  store: ChunkStore,
  fileId: string,
  uploadId: string,
  principal: Principal,
): Promise<ChunkManifest> {
  const manifest = await store.open(fileId, uploadId);
  if (manifest.key !== principal.name && principal.role !== "admin") {
    throw new HttpError(403, "AUTH_FORBIDDEN", "the upload was started with another API key");
  }
  return manifest;
}

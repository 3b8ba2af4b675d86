import { randomUUID } from "node:crypto";
import type { Readable } from "node:stream";
import type { FastifyInstance } from "fastify";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { isFilerelayError, type PublishFileResult } from "@filerelay/core";
import { HttpError } from "../httpError.js";
import { sanitizeFilename, uploadSubject } from "../paths.js";
import { publishedFile, type Publisher } from "../publisher.js";
import { errorSchema, publishedFilesSchema } from "../schemas.js";
import type { GatewayMetrics } from "../metrics.js";

export interface MultipartDeps {
  publisher: Publisher;
  metrics: GatewayMetrics;
}

/**
 * POST /api/v1/files/upload: every `file` part is streamed into publishFile()
 * as it arrives (files over the inline limit straight into the Object Store),
 * but no envelope is published until the whole request has been read: a
 * malformed or truncated body, or any refused part, leaves nothing published
 * (uploaded payload objects are removed again). A `path` field applies to the
 * `file` parts after it.
 */
export function registerMultipartRoutes(app: FastifyInstance, deps: MultipartDeps): void {
  const { publisher, metrics } = deps;
  app.withTypeProvider<ZodTypeProvider>().post(
    "/api/v1/files/upload",
    {
      config: { role: "upload" },
      schema: {
        summary: "Upload one or more files (multipart/form-data `file` fields, optional `path` before them)",
        tags: ["upload"],
        consumes: ["multipart/form-data"],
        response: { 201: publishedFilesSchema, 400: errorSchema, 413: errorSchema, 415: errorSchema },
      },
    },
    async (request, reply) => {
      if (!request.isMultipart()) {
        throw new HttpError(400, "REQUEST_INVALID", "expected a multipart/form-data body with `file` fields");
      }
      const source = request.principal!.source;
      let openGate!: () => void;
      let closeGate!: (err: unknown) => void;
      const gate = new Promise<void>((resolve, reject) => {
        openGate = resolve;
        closeGate = reject;
      });
      gate.catch(() => undefined);
      const pending: (() => Promise<PublishFileResult>)[] = [];
      const started: Promise<unknown>[] = [];
      let path: string | undefined;
      metrics.activeUploads.inc({ api: "multipart" });
      try {
        const parts = request.parts()[Symbol.asyncIterator]();
        for (;;) {
          const step = await parts.next().catch((err: unknown) => {
            throw asClientError(err);
          });
          if (step.done) break;
          const part = step.value;
          if (part.type === "field") {
            if (part.fieldname === "path") path = typeof part.value === "string" ? part.value : undefined;
            continue;
          }
          if (part.fieldname !== "file") {
            throw new HttpError(400, "REQUEST_INVALID", `unexpected file field ${JSON.stringify(part.fieldname)}`);
          }
          const filename = sanitizeFilename(part.filename);
          publisher.checkContentType(filename);
          const subject = uploadSubject(filename, path);
          const id = randomUUID();
          const next = await receivePart(publisher, part.file, { id, source, subject, filename }, gate);
          started.push(next.settled);
          pending.push(next.finish);
        }
        if (pending.length === 0) throw new HttpError(400, "REQUEST_INVALID", "no `file` field in the request");
      } catch (err) {
        closeGate(err);
        await Promise.allSettled(started);
        metrics.activeUploads.dec({ api: "multipart" });
        throw err;
      }
      openGate();
      try {
        const results: PublishFileResult[] = [];
        for (const finish of pending) results.push(await finish());
        return await reply.code(201).send({ files: results.map(publishedFile) });
      } finally {
        metrics.activeUploads.dec({ api: "multipart" });
      }
    },
  );
}

interface ReceivedPart {
  /** Publishes the envelope (once the gate opened) and resolves with its PubAck. */
  finish: () => Promise<PublishFileResult>;
  /** Settles when everything started for this part has (for clean-up after a failure). */
  settled: Promise<unknown>;
}

/**
 * Reads one file part to its end. A file that fits inline is kept (at most
 * INLINE_MAX_BYTES) and published later; a larger one is streamed into the
 * Object Store now, its envelope held back by `gate`.
 */
async function receivePart(
  publisher: Publisher,
  file: Readable,
  meta: { id: string; source: string; subject: string; filename: string },
  gate: Promise<void>,
): Promise<ReceivedPart> {
  let failure: unknown;
  const body = publisher.limit(
    guardStream(file, (err) => (failure ??= err)),
    "multipart",
  );
  const it = body[Symbol.asyncIterator]();
  const head: Buffer[] = [];
  let size = 0;
  let done = false;
  while (size <= publisher.inlineMaxBytes) {
    const next = await it.next().catch((err: unknown) => {
      throw failure ?? err;
    });
    if (next.done) {
      done = true;
      break;
    }
    head.push(Buffer.from(next.value));
    size += next.value.length;
  }
  if (done) {
    const bytes = Buffer.concat(head, size);
    return {
      finish: () => publisher.publish(bytes, meta, { api: "multipart" }),
      settled: Promise.resolve(),
    };
  }
  let drained!: () => void;
  const drainedP = new Promise<void>((resolve) => (drained = resolve));
  async function* rest(): AsyncGenerator<Uint8Array> {
    yield* head;
    try {
      for (let next = await it.next(); !next.done; next = await it.next()) yield next.value;
    } catch (err) {
      failure ??= err;
      throw err;
    }
    drained();
  }
  const published = publisher.publish(rest(), meta, { api: "multipart", beforePublish: () => gate });
  published.catch(() => undefined);
  try {
    await Promise.race([drainedP, published]);
  } catch (err) {
    throw failure ?? err;
  }
  return {
    finish: () =>
      published.catch((err: unknown) => {
        throw failure ?? err;
      }),
    settled: published.catch(() => undefined),
  };
}

/** The part's bytes; a busboy error (truncated or malformed body) becomes a 400, remembered in `onError`. */
async function* guardStream(file: Readable, onError: (err: unknown) => void): AsyncGenerator<Uint8Array> {
  try {
    for await (const chunk of file) yield chunk as Uint8Array;
  } catch (err) {
    const refused = isFilerelayError(err) ? err : invalidBody(err);
    onError(refused);
    throw refused;
  }
}

function invalidBody(err: unknown): HttpError {
  const reason = err instanceof Error ? err.message : String(err);
  return new HttpError(400, "REQUEST_INVALID", `malformed or truncated multipart body: ${reason}`, { cause: err });
}

/** Errors of the multipart parser itself are the client's: its own 4xx kept (413 for too many files), else 400. */
function asClientError(err: unknown): unknown {
  if (isFilerelayError(err)) return err;
  const status = (err as { statusCode?: unknown }).statusCode;
  if (typeof status === "number" && status >= 400 && status < 500 && status !== 406) return err;
  return invalidBody(err);
}

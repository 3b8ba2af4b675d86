import { createReadStream } from "node:fs";
import { truncate } from "node:fs/promises";
import { Readable, Transform } from "node:stream";
import type { IncomingMessage } from "node:http";
import { join } from "node:path";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { FileStore } from "@tus/file-store";
import { Server, type Upload } from "@tus/server";
import { describeError, fileVersionId, isFilerelayError, type Logger } from "@filerelay/core";
import { authorize, type ApiKeys } from "../apiKeys.js";
import type { GatewayConfig } from "../config.js";
import { errorReply } from "../httpError.js";
import type { GatewayMetrics } from "../metrics.js";
import { uploadSubject } from "../paths.js";
import { publishedFile, type Publisher } from "../publisher.js";
import {
  checksumHasher,
  parseUploadChecksum,
  TUS_CHECKSUM_ALGORITHMS,
  TusError,
  type ExpectedChecksum,
} from "./checksum.js";

export const TUS_PATH = "/api/v1/tus";
/** The caller of each request tus is handling, for its hooks (they see only a web Request wrapping it). */
const callers = new WeakMap<IncomingMessage, string>();

function callerSource(req: Request): string | undefined {
  const node = (req as { runtime?: { node?: { req?: IncomingMessage } } }).runtime?.node?.req;
  return node ? callers.get(node) : undefined;
}
const META_SOURCE = "filerelay_source";
const META_SUBJECT = "filerelay_subject";

/** Told of every chunk written: its length, the upload's offset after it, and its declared size. */
type OnBytes = (id: string, bytes: number, offset: number, size: number | null) => void;

/**
 * @tus/file-store plus the tus checksum extension: a PATCH carrying
 * `Upload-Checksum` is hashed as it is written, and when the digest differs
 * (or the body was cut short) the file is truncated back to where the PATCH
 * started and the client gets 460, as the extension requires.
 */
class ChecksumFileStore extends FileStore {
  readonly expected = new Map<string, ExpectedChecksum>();
  readonly #onBytes: OnBytes;

  constructor(options: ConstructorParameters<typeof FileStore>[0], onBytes: OnBytes) {
    super(options);
    this.extensions = [...this.extensions, "checksum"];
    this.#onBytes = onBytes;
  }

  override async write(readable: IncomingMessage | Readable, id: string, offset: number): Promise<number> {
    const expected = this.expected.get(id);
    this.expected.delete(id);
    const hasher = expected ? checksumHasher(expected) : undefined;
    const onBytes = this.#onBytes;
    const size = (await this.configstore.get(id))?.size ?? null;
    let at = offset;
    const tap = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        hasher?.update(chunk);
        at += chunk.length;
        onBytes(id, chunk.length, at, size);
        callback(null, chunk);
      },
    });
    readable.on("error", (err) => tap.destroy(err));
    const end = await super.write(readable.pipe(tap), id, offset);
    if (!hasher || hasher.matches()) return end;
    await truncate(this.pathOf(id), offset);
    throw new TusError(460, "Checksum Mismatch\n");
  }

  /** Where an upload's bytes are (FileStore's own resolve() is private). */
  pathOf(id: string): string {
    return join(this.directory, id);
  }
}

export interface TusDeps {
  config: GatewayConfig;
  keys: ApiKeys;
  publisher: Publisher;
  metrics: GatewayMetrics;
  log: Logger;
}

export interface TusUploads {
  /** Removes uploads abandoned for longer than UPLOAD_EXPIRY (since creation). */
  expire(): Promise<number>;
  /** Publishes uploads whose bytes all arrived but whose publish did not happen (a crash in between). */
  recover(): Promise<number>;
}

/**
 * tus 1.0 at /api/v1/tus/ (creation, termination, checksum, expiration) on
 * @tus/server, its files in GATEWAY_UPLOAD_DIR/tus so an interrupted upload
 * resumes after a gateway restart. When the last byte has arrived the file is
 * published (ce-id derived from the tus upload id, so a second attempt is a
 * duplicate JetStream drops) before the final PATCH is answered, and removed.
 */
export function registerTusRoutes(app: FastifyInstance, deps: TusDeps): TusUploads {
  const { config, keys, publisher, metrics, log } = deps;
  const store = new ChecksumFileStore(
    { directory: join(config.GATEWAY_UPLOAD_DIR, "tus"), expirationPeriodInMilliseconds: config.UPLOAD_EXPIRY },
    (id, bytes, offset, size) => {
      metrics.uploadBytes.inc({ api: "tus" }, bytes);
      publisher.progress(tusFileId(id), offset, size);
    },
  );

  const publishUpload = async (upload: Upload) => {
    const meta = upload.metadata ?? {};
    const source = meta[META_SOURCE];
    const subject = meta[META_SUBJECT];
    if (!source || !subject) throw new Error(`tus upload ${upload.id} has no filerelay metadata`);
    const path = store.pathOf(upload.id);
    metrics.activeUploads.inc({ api: "tus" });
    try {
      const result = await publisher.publish(
        Readable.from(createReadStream(path, { highWaterMark: 256 * 1024 })),
        { id: tusFileId(upload.id), source, subject },
        { api: "tus", ...(upload.size !== undefined ? { expectedSize: upload.size } : {}) },
      );
      await store.remove(upload.id).catch((err: unknown) => {
        log.warn({ upload: upload.id, err: describeError(err) }, "could not remove a published tus upload");
      });
      log.info({ fileId: result.id, subject, size: result.size, upload: upload.id }, "tus upload published");
      return result;
    } finally {
      metrics.activeUploads.dec({ api: "tus" });
    }
  };

  const tus = new Server({
    path: TUS_PATH,
    datastore: store,
    maxSize: config.MAX_UPLOAD_SIZE,
    respectForwardedHeaders: true,
    exposedHeaders: ["Filerelay-File-Id", "Filerelay-Sha256", "Tus-Checksum-Algorithm"],
    allowedHeaders: ["Authorization", "Upload-Checksum"],
    disableTerminationForFinishedUploads: true,
    onIncomingRequest: (req, uploadId) => {
      if (req.method === "PATCH") {
        const expected = parseUploadChecksum(req.headers.get("upload-checksum"));
        if (expected) store.expected.set(uploadId, expected);
      }
      return Promise.resolve();
    },
    // eslint-disable-next-line @typescript-eslint/require-await -- a throw must become a rejection for @tus/server
    onUploadCreate: async (req, upload) => {
      const source = callerSource(req);
      if (!source) throw new TusError(401, tusBody("AUTH_REQUIRED", "a valid API key is required"));
      const meta = upload.metadata ?? {};
      try {
        const subject = uploadSubject(meta.filename ?? meta.name ?? "", meta.path ?? undefined);
        publisher.checkContentType(subject.slice(subject.lastIndexOf("/") + 1));
        if (upload.size !== undefined) publisher.checkSize(upload.size);
        return { metadata: { ...meta, [META_SOURCE]: source, [META_SUBJECT]: subject } };
      } catch (err) {
        const { status, body } = errorReply(err);
        throw new TusError(status, `${JSON.stringify(body)}\n`);
      }
    },
    onUploadFinish: async (_req, upload) => {
      try {
        const result = await publishUpload(upload);
        const answer = publishedFile(result);
        return { headers: { "Filerelay-File-Id": answer.file_id, "Filerelay-Sha256": answer.sha256 } };
      } catch (err) {
        log.error({ upload: upload.id, err: describeError(err) }, "publishing a finished tus upload failed");
        const { status, body } = errorReply(err);
        throw new TusError(isFilerelayError(err) ? status : 503, `${JSON.stringify(body)}\n`);
      }
    },
    onResponseError: (_req, err) => {
      if ("status_code" in err) return undefined;
      log.error({ err: describeError(err) }, "tus request failed");
      return { status_code: 500, body: tusBody("INTERNAL_ERROR", "internal error") };
    },
  });

  const handler = async (request: FastifyRequest, reply: FastifyReply) => {
    if (request.method !== "OPTIONS") {
      callers.set(request.raw, authorize(keys, request.headers.authorization, "upload").source);
    }
    reply.raw.setHeader("Tus-Checksum-Algorithm", TUS_CHECKSUM_ALGORITHMS.join(","));
    reply.hijack();
    await tus.handle(request.raw, reply.raw);
  };
  const options = { schema: { hide: true } };
  app.all(TUS_PATH, options, handler);
  app.all(`${TUS_PATH}/`, options, handler);
  app.all(`${TUS_PATH}/*`, options, handler);

  return {
    expire: () => tus.cleanUpExpiredUploads(),
    recover: async () => {
      let published = 0;
      const ids = (await store.configstore.list?.()) ?? [];
      for (const id of ids) {
        const upload = await store.getUpload(id).catch(() => undefined);
        if (!upload || upload.size === undefined || upload.offset !== upload.size) continue;
        try {
          await publishUpload(upload);
          published++;
        } catch (err) {
          log.warn({ upload: id, err: describeError(err) }, "could not publish a finished tus upload; will retry");
        }
      }
      return published;
    },
  };
}

/** The ce-id of a tus upload's file: derived from the upload id, so a second publish of it is a duplicate. */
export function tusFileId(uploadId: string): string {
  return fileVersionId(`tus:${uploadId}`);
}

function tusBody(code: string, error: string): string {
  return `${JSON.stringify({ error, code })}\n`;
}

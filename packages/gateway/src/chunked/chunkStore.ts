import { randomBytes, randomUUID } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { HttpError } from "../httpError.js";
import { chunkFileName, chunkNumberOf, expectedChunkLength, isExpired, totalChunks, type ChunkPlan } from "./plan.js";

/** What init recorded about a chunked upload (manifest.json). */
export interface ChunkManifest extends ChunkPlan {
  fileId: string;
  uploadId: string;
  filename: string;
  subject: string;
  sha256: string | null;
  source: string;
  /** The API key that started it: only it (or an admin) may continue. */
  key: string;
  createdAt: string;
}

/** What complete answered, kept so a retried complete gets the same answer. */
export interface ChunkDone {
  file_id: string;
  filename: string;
  size: number;
  sha256: string;
  status_url: string;
}

const MANIFEST = "manifest.json";
const DONE = "done.json";

/**
 * Chunked uploads on disk, one directory per upload under
 * GATEWAY_UPLOAD_DIR/chunked: its manifest and one file per received chunk.
 * On disk (not in memory or JetStream) so a partial upload survives a restart
 * and costs the broker nothing until it is complete; each chunk is written to
 * a temporary name and renamed, so a re-sent chunk replaces the old one whole.
 */
export class ChunkStore {
  readonly #root: string;

  constructor(uploadDir: string) {
    this.#root = join(uploadDir, "chunked");
  }

  async init(): Promise<void> {
    await mkdir(this.#root, { recursive: true });
  }

  #dir(fileId: string): string {
    if (!/^[0-9a-f-]{36}$/.test(fileId)) throw notFound();
    return join(this.#root, fileId);
  }

  async create(fields: Omit<ChunkManifest, "fileId" | "uploadId" | "createdAt">): Promise<ChunkManifest> {
    const manifest: ChunkManifest = {
      ...fields,
      fileId: randomUUID(),
      uploadId: randomBytes(16).toString("hex"),
      createdAt: new Date().toISOString(),
    };
    const dir = this.#dir(manifest.fileId);
    await mkdir(dir, { recursive: true });
    await writeAtomically(join(dir, MANIFEST), JSON.stringify(manifest));
    return manifest;
  }

  /** The manifest, when `uploadId` matches (404 otherwise, so ids cannot be probed). */
  async open(fileId: string, uploadId: string): Promise<ChunkManifest> {
    const raw = await readFile(join(this.#dir(fileId), MANIFEST), "utf8").catch(() => undefined);
    if (raw === undefined) throw notFound();
    const manifest = JSON.parse(raw) as ChunkManifest;
    if (manifest.uploadId !== uploadId) throw notFound();
    return manifest;
  }

  /** Streams one chunk to disk; its length must be exactly what the plan says (400 otherwise, nothing kept). */
  async writeChunk(manifest: ChunkManifest, n: number, body: AsyncIterable<Uint8Array>): Promise<void> {
    const expected = expectedChunkLength(manifest, n);
    if (expected === undefined) {
      throw new HttpError(400, "REQUEST_INVALID", `chunk_number must be 1 to ${totalChunks(manifest)}, got ${n}`);
    }
    const dir = this.#dir(manifest.fileId);
    const tmp = join(dir, `.${chunkFileName(n)}.${randomBytes(4).toString("hex")}.tmp`);
    let length = 0;
    async function* counted(): AsyncGenerator<Uint8Array> {
      for await (const c of body) {
        length += c.length;
        if (length > expected!) {
          throw new HttpError(400, "REQUEST_INVALID", `chunk ${n} is longer than ${expected} bytes`);
        }
        yield c;
      }
    }
    try {
      await pipeline(counted, createWriteStream(tmp, { flags: "w" }));
      if (length !== expected) {
        throw new HttpError(400, "REQUEST_INVALID", `chunk ${n} has ${length} bytes, expected ${expected}`);
      }
      await rename(tmp, join(dir, chunkFileName(n)));
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }

  /** Chunk numbers received so far. */
  async received(fileId: string): Promise<number[]> {
    const names = await readdir(this.#dir(fileId)).catch(() => []);
    return names.map(chunkNumberOf).filter((n): n is number => n !== undefined);
  }

  /** The whole file, chunk after chunk, read from disk as it is consumed. */
  async *content(manifest: ChunkManifest): AsyncGenerator<Uint8Array> {
    const dir = this.#dir(manifest.fileId);
    for (let n = 1; n <= totalChunks(manifest); n++) {
      yield* createReadStream(join(dir, chunkFileName(n)), { highWaterMark: 256 * 1024 }) as AsyncIterable<Buffer>;
    }
  }

  async done(fileId: string): Promise<ChunkDone | undefined> {
    const raw = await readFile(join(this.#dir(fileId), DONE), "utf8").catch(() => undefined);
    return raw === undefined ? undefined : (JSON.parse(raw) as ChunkDone);
  }

  /** Records the answer of complete and drops the chunks (the manifest stays until expiry). */
  async markDone(manifest: ChunkManifest, done: ChunkDone): Promise<void> {
    const dir = this.#dir(manifest.fileId);
    await writeAtomically(join(dir, DONE), JSON.stringify(done));
    for (const n of await this.received(manifest.fileId)) await rm(join(dir, chunkFileName(n)), { force: true });
  }

  /** Removes uploads with no activity for `expiryMs` (finished ones too: their answer is no longer needed). */
  async expire(expiryMs: number, now = Date.now()): Promise<string[]> {
    const removed: string[] = [];
    for (const id of await readdir(this.#root).catch(() => [])) {
      const dir = join(this.#root, id);
      const names = await readdir(dir).catch(() => []);
      let last = 0;
      for (const name of names) {
        const s = await stat(join(dir, name)).catch(() => undefined);
        if (s) last = Math.max(last, s.mtimeMs);
      }
      if (last === 0) last = (await stat(dir).catch(() => undefined))?.mtimeMs ?? 0;
      if (isExpired(last, now, expiryMs)) {
        await rm(dir, { recursive: true, force: true });
        removed.push(id);
      }
    }
    return removed;
  }
}

function notFound(): HttpError {
  return new HttpError(404, "NOT_FOUND", "no such upload");
}

async function writeAtomically(path: string, text: string): Promise<void> {
  const tmp = `${path}.${randomBytes(4).toString("hex")}.tmp`;
  await writeFile(tmp, text);
  await rename(tmp, path);
}

import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, stat } from "node:fs/promises";
import { basename, dirname, resolve } from "node:path";
import { SingleBar } from "cli-progress";
import {
  computeFingerprint,
  envelopeToRecord,
  FilerelayError,
  FINGERPRINT_HEAD_BYTES,
  fileVersionId,
  isFilerelayError,
  publishFile,
  readHead,
  SourceError,
} from "@filerelay/core/internal";
import { printJson, type CommandContext } from "./commandContext.js";
import { formatBytes, renderTable } from "./renderTable.js";
import { requireStream } from "./requireStream.js";

export interface SendArgs {
  file: string;
  /** ce-source; default: the file's directory name, as a consumer on that directory would say. */
  source?: string | undefined;
  contentType?: string | undefined;
  /** Print every envelope header as a table, not one summary line. */
  verbose?: boolean | undefined;
}

export interface SendResult {
  id: string;
  subject: string;
  seq: number;
  duplicate: boolean;
  headers: Record<string, string>;
  /** How long the publish took, upload included. */
  durationMs: number;
}

async function readFileBytes(path: string, size: number): Promise<Buffer> {
  const fh = await open(path, "r");
  try {
    const bytes = Buffer.alloc(size);
    let total = 0;
    while (total < size) {
      const { bytesRead } = await fh.read(bytes, total, size - total, total);
      if (bytesRead === 0) break;
      total += bytesRead;
    }
    if (total !== size) throw new Error(`read ${total} of ${size} bytes: the file shrank`);
    return bytes;
  } finally {
    await fh.close();
  }
}

/**
 * Publishes one file as the consumer would: same ce-id scheme (UUIDv5 of the
 * consumer's fingerprint of source + relative path + size + mtime + inode +
 * ctime + content digest), so a file sent by hand and later seen by a
 * consumer on the same directory is one file version; inline up to
 * INLINE_MAX_BYTES, otherwise uploaded to the payload Object Store first (the
 * envelope never points at a partial object).
 */
export async function sendFile(ctx: CommandContext, args: SendArgs): Promise<SendResult> {
  const path = resolve(args.file);
  let st;
  try {
    st = await stat(path);
  } catch (err) {
    throw new SourceError("FILE_READ_FAILED", `cannot read ${args.file}`, { cause: err });
  }
  if (!st.isFile()) throw new SourceError("FILE_NOT_REGULAR", `${args.file} is not a regular file`);
  const filename = basename(path);
  const source = args.source ?? (basename(dirname(path)) || "manual");
  const inline = st.size <= ctx.config.INLINE_MAX_BYTES;

  let body: Buffer | undefined;
  let head: Buffer;
  try {
    if (inline) {
      body = await readFileBytes(path, st.size);
      head = body.subarray(0, FINGERPRINT_HEAD_BYTES);
    } else {
      const fh = await open(path, "r");
      try {
        head = await readHead(fh, st.size);
      } finally {
        await fh.close();
      }
    }
  } catch (err) {
    throw new SourceError("FILE_READ_FAILED", `reading ${args.file} failed`, { cause: err });
  }
  const id = fileVersionId(
    computeFingerprint({
      head,
      sha256: body ? createHash("sha256").update(body).digest("hex") : undefined,
      size: st.size,
      mtimeMs: st.mtimeMs,
      ino: st.ino,
      ctimeMs: st.ctimeMs,
      source,
      relPath: filename,
    }),
  );
  await requireStream(ctx, ctx.names.stream);
  if (!inline) await requireStream(ctx, ctx.names.payloadStream);

  const onTerminal = process.stderr.isTTY;
  const bar =
    inline || ctx.json || !onTerminal
      ? undefined
      : new SingleBar({
          format: `${filename} [{bar}] {percentage}% | {done} of {size} | {rate}/s | ETA {eta_formatted}`,
          hideCursor: true,
          etaBuffer: 50,
        });
  const started = Date.now();
  const rate = (bytes: number) => formatBytes(Math.round(bytes / Math.max(0.001, (Date.now() - started) / 1000)));
  bar?.start(st.size, 0, { done: formatBytes(0), size: formatBytes(st.size), rate: formatBytes(0) });
  // Without a terminal there is no bar: say what is happening, once, rather than nothing for minutes.
  if (!inline && !ctx.json && !onTerminal) {
    ctx.err(`uploading ${filename} (${formatBytes(st.size)}) to the payload Object Store…\n`);
  }
  let result;
  try {
    result = await publishFile(
      ctx.nc,
      body ?? createReadStream(path, { highWaterMark: ctx.config.PAYLOAD_CHUNK_BYTES }),
      { id, source, subject: filename, filename, mtime: new Date(st.mtimeMs), contentType: args.contentType },
      {
        js: ctx.js,
        subject: ctx.config.SUBJECT,
        stream: ctx.names.stream,
        inlineMaxBytes: ctx.config.INLINE_MAX_BYTES,
        chunkBytes: ctx.config.PAYLOAD_CHUNK_BYTES,
        signal: ctx.signal,
        onProgress: (bytes) => bar?.update(bytes, { done: formatBytes(bytes), rate: rate(bytes) }),
        beforePublish: (envelope) => {
          if (envelope.size !== st.size) {
            throw new SourceError("FILE_CHANGED", `${args.file} changed size during the upload; nothing was published`);
          }
        },
      },
    );
  } catch (err) {
    if (isFilerelayError(err)) throw err;
    throw new FilerelayError("PUBLISH_FAILED", `publishing ${args.file} to ${ctx.config.SUBJECT} failed`, {
      cause: err,
    });
  } finally {
    bar?.stop();
  }
  return {
    id: result.id,
    subject: ctx.config.SUBJECT,
    seq: result.seq,
    duplicate: result.duplicate,
    headers: envelopeToRecord(result.envelope),
    durationMs: Date.now() - started,
  };
}

export async function sendCommand(ctx: CommandContext, args: SendArgs): Promise<void> {
  const result = await sendFile(ctx, args);
  if (ctx.json) return printJson(ctx, result);
  if (args.verbose) ctx.out(`${renderTable(["header", "value"], Object.entries(result.headers))}\n`);
  const size = Number(result.headers["ce-filesize"] ?? 0);
  const how = result.headers["ce-payload"] === "inline" ? "inline" : "via the Object Store";
  const seconds = Math.max(0.001, result.durationMs / 1000);
  ctx.out(
    result.duplicate
      ? `${args.file}: already in ${ctx.names.stream} as ${result.id} (same ce-id within the duplicate window): not published again\n`
      : `${args.file}: published ${result.id} to ${result.subject} (${formatBytes(size)} ${how}, ` +
          `${seconds.toFixed(1)} s, ${formatBytes(Math.round(size / seconds))}/s, stream seq ${result.seq})\n`,
  );
}

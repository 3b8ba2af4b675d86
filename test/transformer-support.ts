import { createWriteStream } from "node:fs";
import { createHash } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { crc32, createGzip, deflateRawSync } from "node:zlib";
import { pack as tarPack } from "tar-stream";
import { fileURLToPath } from "node:url";
import { startNodeProcess, startService, waitFor, type LogLine, type RunningService } from "./support/index.js";

/**
 * Helpers of the transformer suites: archives with exactly the entries a
 * test wants (hostile ones included, which `tar`/`zip` refuse to make), the
 * consumer → transformer → producer chain, and RSS sampling.
 */

export interface TarEntrySpec {
  name: string;
  content?: Buffer;
  type?: "file" | "symlink" | "link" | "directory" | "character-device";
  linkname?: string;
  /** Declared size differing from the content (a lying header). */
  size?: number;
}

/** Writes a tar (gzip-compressed when `gzip`) holding `entries` in order. */
export async function writeTar(path: string, entries: Iterable<TarEntrySpec>, gzip: boolean): Promise<void> {
  const pack = tarPack();
  const out = gzip ? pipeline(pack, createGzip(), createWriteStream(path)) : pipeline(pack, createWriteStream(path));
  for (const e of entries) {
    const type = e.type ?? "file";
    await new Promise<void>((resolve, reject) => {
      const header = {
        name: e.name,
        type,
        mode: 0o644,
        mtime: new Date(1_700_000_000_000),
        ...(e.linkname ? { linkname: e.linkname } : {}),
        ...(type === "file" ? { size: e.content?.length ?? 0 } : {}),
      };
      const done = (err?: Error | null) => (err ? reject(err) : resolve());
      if (type === "file") pack.entry(header, e.content ?? Buffer.alloc(0), done);
      else pack.entry(header, done);
    });
  }
  pack.finalize();
  await out;
}

export interface ZipEntrySpec {
  name: string;
  /** Content; deflated unless `stored`. */
  content?: Buffer;
  stored?: boolean;
  /** Already-deflated data with its declared sizes and CRC (bombs). */
  raw?: { data: Buffer; size: number; crc: number };
  /** Unix mode (file type bits included), e.g. 0o120777 for a symlink. */
  mode?: number;
  /** Point this entry's central record at another entry's local data (overlapping-entry bombs). */
  sameDataAs?: number;
}

/** A minimal zip writer (no zip64): exact names and attributes, hostile ones included. */
export function buildZip(entries: readonly ZipEntrySpec[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  const offsets: number[] = [];
  const metas: { crc: number; csize: number; usize: number; method: number }[] = [];
  let offset = 0;
  entries.forEach((e, i) => {
    const name = Buffer.from(e.name, "utf8");
    let data: Buffer | undefined;
    let meta: { crc: number; csize: number; usize: number; method: number };
    if (e.sameDataAs !== undefined) {
      meta = metas[e.sameDataAs]!;
      offsets.push(offsets[e.sameDataAs]!);
    } else {
      if (e.raw) {
        data = e.raw.data;
        meta = { crc: e.raw.crc, csize: data.length, usize: e.raw.size, method: 8 };
      } else {
        const content = e.content ?? Buffer.alloc(0);
        data = e.stored ? content : deflateRawSync(content);
        meta = { crc: crc32(content), csize: data.length, usize: content.length, method: e.stored ? 0 : 8 };
      }
      const local = Buffer.alloc(30);
      local.writeUInt32LE(0x04034b50, 0);
      local.writeUInt16LE(20, 4);
      local.writeUInt16LE(0x800, 6);
      local.writeUInt16LE(meta.method, 8);
      local.writeUInt16LE(0, 10);
      local.writeUInt16LE(0x21, 12);
      local.writeUInt32LE(meta.crc >>> 0, 14);
      local.writeUInt32LE(meta.csize, 18);
      local.writeUInt32LE(meta.usize, 22);
      local.writeUInt16LE(name.length, 26);
      local.writeUInt16LE(0, 28);
      offsets.push(offset);
      locals.push(local, name, data);
      offset += local.length + name.length + data.length;
    }
    metas.push(meta);
    const c = Buffer.alloc(46);
    c.writeUInt32LE(0x02014b50, 0);
    c.writeUInt16LE((3 << 8) | 20, 4);
    c.writeUInt16LE(20, 6);
    c.writeUInt16LE(0x800, 8);
    c.writeUInt16LE(meta.method, 10);
    c.writeUInt16LE(0, 12);
    c.writeUInt16LE(0x21, 14);
    c.writeUInt32LE(meta.crc >>> 0, 16);
    c.writeUInt32LE(meta.csize, 20);
    c.writeUInt32LE(meta.usize, 24);
    c.writeUInt16LE(name.length, 28);
    c.writeUInt32LE((((e.mode ?? (e.name.endsWith("/") ? 0o40755 : 0o100644)) << 16) >>> 0) >>> 0, 38);
    c.writeUInt32LE(offsets[i]!, 42);
    centrals.push(c, name);
  });
  const cd = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, end]);
}

/** Raw deflate of `n` zero bytes (n ≤ 256 MiB), with their CRC-32. */
export function deflatedZeros(n: number): { data: Buffer; size: number; crc: number } {
  const zeros = Buffer.alloc(n);
  return { data: deflateRawSync(zeros, { level: 9 }), size: n, crc: crc32(zeros) };
}

/** Environment of the consumer at the head of the chain: its only sink group is the transformer's. */
export function chainConsumerEnv(natsUrl: string, root: string, extra: Record<string, string> = {}) {
  return {
    NATS_URL: natsUrl,
    INPUT_DIR: `${root}/input`,
    ARCHIVE_DIR: `${root}/archive`,
    ERROR_DIR: `${root}/consumer-error`,
    SOURCE: "drop",
    STABILITY_MS: "200",
    POLL_INTERVAL_MS: "500",
    SINK_GROUPS: "transformers",
    LOG_LEVEL: "info",
    ...extra,
  };
}

export function transformerEnv(natsUrl: string, root: string, extra: Record<string, string> = {}) {
  return {
    NATS_URL: natsUrl,
    TRANSFORM_TMP_DIR: `${root}/scratch`,
    ERROR_DIR: `${root}/transformer-error`,
    RETRY_BACKOFF_MS: "100",
    ACK_WAIT_MS: "10000",
    SHUTDOWN_TIMEOUT_MS: "5000",
    LOG_LEVEL: "info",
    ...extra,
  };
}

/** A producer on files.processed writing `<RelDir>/<name>` under `out` (no date folders, no id in the name). */
export function mirrorProducerEnv(natsUrl: string, out: string, extra: Record<string, string> = {}) {
  return {
    NATS_URL: natsUrl,
    SUBJECT: "files.processed",
    OUTPUT_DIR: out,
    ORGANIZE_BY: "none",
    FILENAME_TEMPLATE: "{{.RelDir}}/{{.Name}}{{.Ext}}",
    RETRY_BACKOFF_MS: "100",
    ACK_WAIT_MS: "10000",
    SHUTDOWN_TIMEOUT_MS: "5000",
    DISK_SPACE_FACTOR: "0",
    LOG_LEVEL: "info",
    ...extra,
  };
}

/** The built transformer (`pnpm build` first) as a process, like startService() for the other services. */
export function startTransformer(env: Record<string, string | undefined>): RunningService<"transformer"> {
  const entry = fileURLToPath(new URL("../packages/transformer/dist/main.js", import.meta.url));
  return startNodeProcess("transformer", entry, { HTTP_PORT: "0", LOG_LEVEL: "debug", ...env });
}

export const transformerReady = (svc: RunningService<"transformer">, timeoutMs = 30_000): Promise<LogLine> =>
  svc.waitForLog((l) => l.msg === "transformer started", timeoutMs, "the transformer to start");

/** The transformer's settled files: acked ("file handled") and dead-lettered lines of the SDK. */
export function handled(svc: RunningService<"transformer">, outcome: "acked" | "dead-lettered"): LogLine[] {
  return svc
    .logs()
    .filter((l) => l.outcome === outcome && (l.msg === "file handled" || l.msg === "file dead-lettered"));
}

/** Samples a process's resident set size (VmRSS) every 100 ms; `max()` in bytes. */
export function sampleRss(pid: number): { max(): number; stop(): void } {
  let max = 0;
  const read = async () => {
    try {
      const status = await readFile(`/proc/${pid}/status`, "utf8");
      const m = /VmRSS:\s+(\d+) kB/.exec(status);
      if (m) max = Math.max(max, Number(m[1]) * 1024);
    } catch {
      /* exited */
    }
  };
  const timer = setInterval(() => void read(), 100);
  void read();
  return { max: () => max, stop: () => clearInterval(timer) };
}

export { startService, waitFor };

/** Files that have landed under `dir` (the producer's in-progress temp files excluded), with their SHA-256. */
export async function landed(dir: string): Promise<{ rel: string; sha256: string; size: number }[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  const out: { rel: string; sha256: string; size: number }[] = [];
  for (const e of entries) {
    if (!e.isFile() || /^\.filerelay-.*\.tmp$/.test(e.name)) continue;
    const p = join(e.parentPath, e.name);
    const data = await readFile(p).catch(() => undefined);
    if (data)
      out.push({
        rel: p.slice(dir.length + 1),
        sha256: createHash("sha256").update(data).digest("hex"),
        size: data.length,
      });
  }
  return out.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
}

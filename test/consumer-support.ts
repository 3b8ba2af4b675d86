import { createHash } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { headersToRecord } from "@filerelay/core";
import { startService, waitFor, type LogLine, type RunningService } from "./support/index.js";

/** Temporary INPUT/ARCHIVE/ERROR directories, removed on dispose. */
export interface ConsumerDirs extends AsyncDisposable {
  root: string;
  input: string;
  archive: string;
  error: string;
}

export async function makeConsumerDirs(prefix = "consumer-it-"): Promise<ConsumerDirs> {
  const root = await mkdtemp(join(tmpdir(), prefix));
  const dirs = { root, input: join(root, "in"), archive: join(root, "archive"), error: join(root, "error") };
  await mkdir(dirs.input);
  return {
    ...dirs,
    [Symbol.asyncDispose]: () => rm(root, { recursive: true, force: true }),
  };
}

/** Service environment with timings short enough for tests. */
export function consumerEnv(
  natsUrl: string,
  dirs: { input: string; archive?: string; error?: string },
  extra: Record<string, string | undefined> = {},
): Record<string, string | undefined> {
  return {
    NATS_URL: natsUrl,
    INPUT_DIR: dirs.input,
    ARCHIVE_DIR: dirs.archive,
    ERROR_DIR: dirs.error,
    SOURCE: "it",
    POLL_INTERVAL_MS: "250",
    STABILITY_MS: "300",
    RETRY_BACKOFF_MS: "100",
    HTTP_PORT: "0",
    ...extra,
  };
}

export function startConsumer(env: Record<string, string | undefined>): RunningService {
  return startService("consumer", env);
}

export const consumerStarted = (svc: RunningService, timeoutMs = 30_000): Promise<LogLine> =>
  svc.waitForLog((l) => l.msg === "consumer started", timeoutMs, "the consumer to start");

export function sha256(data: Uint8Array | string): string {
  return createHash("sha256").update(data).digest("hex");
}

export async function writeRel(root: string, rel: string, data: Uint8Array | string): Promise<string> {
  const path = join(root, ...rel.split("/"));
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, data);
  return path;
}

/** Every file under `root`, as '/'-separated relative paths, sorted (the shared walker). */
export { walkFiles as listFiles } from "./support/chaos.js";

export function todayUtc(): string {
  return new Date().toISOString().slice(0, 10);
}

export interface StoredEnvelope {
  seq: number;
  subject: string;
  headers: Record<string, string>;
  data: Uint8Array;
}

/** A plain NATS client reading the FILES stream directly (no producer needed). */
export interface StreamReader extends AsyncDisposable {
  nc: NatsConnection;
  jsm: JetStreamManager;
  /** Every message currently in the stream, in order. */
  read(): Promise<StoredEnvelope[]>;
  count(): Promise<number>;
  /** Waits until the stream holds at least n messages and returns them. */
  waitFor(n: number, timeoutMs?: number): Promise<StoredEnvelope[]>;
}

export async function openStreamReader(url: string, stream = "FILES"): Promise<StreamReader> {
  const nc = await connect({ servers: url, maxReconnectAttempts: -1, reconnectTimeWait: 250 });
  const jsm = await jetstreamManager(nc);
  const count = async () => {
    try {
      return (await jsm.streams.info(stream)).state.messages;
    } catch {
      return 0;
    }
  };
  const read = async (): Promise<StoredEnvelope[]> => {
    const info = await jsm.streams.info(stream);
    const out: StoredEnvelope[] = [];
    for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
      const m = await jsm.streams.getMessage(stream, { seq }).catch(() => null);
      if (!m) continue;
      out.push({ seq, subject: m.subject, headers: headersToRecord(m.header), data: m.data });
    }
    return out;
  };
  return {
    nc,
    jsm,
    read,
    count,
    waitFor: async (n, timeoutMs = 30_000) => {
      await waitFor(async () => (await count()) >= n, { timeoutMs, message: `${n} messages in ${stream}` });
      return read();
    },
    [Symbol.asyncDispose]: async () => {
      await nc.close();
    },
  };
}

/** The per-file outcome lines of a consumer ("file published", "file failed", ...). */
export function outcomes(svc: RunningService, outcome?: string): LogLine[] {
  return svc.logs().filter((l) => typeof l.outcome === "string" && (outcome === undefined || l.outcome === outcome));
}

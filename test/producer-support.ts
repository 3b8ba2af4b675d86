/**
 * Helpers shared by the producer integration tests: publish envelopes by hand
 * with a plain JetStream client (as any third party could), read dead
 * letters, list output trees.
 */
import { createHash, randomUUID } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { jetstream, jetstreamManager, type JetStreamClient } from "@nats-io/jetstream";
import { headers as natsHeaders } from "@nats-io/nats-core";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { DLQ_HEADERS, dlqSubject, envelopeToRecord, type Envelope } from "@filerelay/core";
import type { LogLine, RunningService } from "./support/index.js";

export const sha256 = (b: Uint8Array | string) => createHash("sha256").update(b).digest("hex");

export interface TestFile {
  envelope: Envelope;
  content: Buffer;
}

/** A valid inline envelope for `content`, named by `subject` (relative path). */
export function testFile(subject: string, content: Buffer | string, over: Partial<Envelope> = {}): TestFile {
  const bytes = Buffer.isBuffer(content) ? content : Buffer.from(content);
  const filename = subject.split("/").pop() ?? subject;
  return {
    content: bytes,
    envelope: {
      id: randomUUID(),
      source: "api",
      type: "io.filerelay.file.v1",
      time: new Date(),
      subject,
      contentType: filename.endsWith(".txt") ? "text/plain" : "application/octet-stream",
      filename,
      size: bytes.length,
      sha256: sha256(bytes),
      mtime: new Date(),
      payload: { kind: "inline" },
      ...over,
    },
  };
}

export interface Publisher extends AsyncDisposable {
  nc: NatsConnection;
  js: JetStreamClient;
  /** Publishes a valid envelope (its headers from core's envelopeToRecord). */
  publish(file: TestFile, subject?: string): Promise<void>;
  /**
   * Publishes raw headers + body: `headers` are applied over the file's valid
   * ones; `null` removes a header. A unique Nats-Msg-Id is used unless given.
   */
  publishRaw(
    file: TestFile,
    headers: Record<string, string | null>,
    body?: Uint8Array,
    subject?: string,
  ): Promise<void>;
}

export async function createPublisher(url: string): Promise<Publisher> {
  const nc = await connect({ servers: url });
  const js = jetstream(nc);
  const publishRaw: Publisher["publishRaw"] = async (file, over, body, subject = "files.input") => {
    const record: Record<string, string | null> = { ...envelopeToRecord(file.envelope), ...over };
    if (!("Nats-Msg-Id" in over)) record["Nats-Msg-Id"] = randomUUID();
    const h = natsHeaders();
    for (const [k, v] of Object.entries(record)) if (v !== null) h.set(k, v);
    await js.publish(subject, body ?? file.content, { headers: h });
  };
  return {
    nc,
    js,
    publish: (file, subject) => publishRaw(file, { "Nats-Msg-Id": file.envelope.id }, undefined, subject),
    publishRaw,
    [Symbol.asyncDispose]: () => nc.close(),
  };
}

export interface DeadLetter {
  subject: string;
  code: string | undefined;
  error: string | undefined;
  deliveries: number;
  headers: Record<string, string>;
  body: Uint8Array;
}

/** Every dead letter of `group` in the DLQ stream, in order. */
export async function readDeadLetters(nc: NatsConnection, group: string, stream = "FILES"): Promise<DeadLetter[]> {
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info(`${stream}_DLQ`);
  const out: DeadLetter[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const m = await jsm.streams.getMessage(`${stream}_DLQ`, { seq }).catch(() => null);
    if (!m || m.subject !== dlqSubject(group)) continue;
    const headers: Record<string, string> = {};
    for (const [k, v] of m.header ?? []) if (v[0] !== undefined) headers[k] = v[0];
    out.push({
      subject: m.subject,
      code: headers[DLQ_HEADERS.code],
      error: headers[DLQ_HEADERS.error],
      deliveries: Number(headers[DLQ_HEADERS.deliveries] ?? 0),
      headers,
      body: m.data,
    });
  }
  return out;
}

/** Relative paths of every regular file under `dir`, sorted ('/'-separated). */
export async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(dir.length + 1))
    .sort();
}

export async function fileSha(path: string): Promise<string> {
  return sha256(await readFile(path));
}

/** UTC date directory of today, as ORGANIZE_BY=date writes it. */
export function todayDir(now = new Date()): string {
  const p = (n: number) => String(n).padStart(2, "0");
  return `${now.getUTCFullYear()}/${p(now.getUTCMonth() + 1)}/${p(now.getUTCDate())}`;
}

/** The producer's per-file outcome lines (written / duplicate / skipped). */
export function outcomeLines(svc: RunningService): LogLine[] {
  return svc.logs().filter((l) => typeof l.location === "string" && typeof l.outcome === "string");
}

/** The SDK's retry / dead-letter lines. */
export function sdkLines(svc: RunningService, outcome: "acked" | "retry" | "dead-lettered"): LogLine[] {
  return svc.logs().filter((l) => l.outcome === outcome && l.msg !== undefined && l.location === undefined);
}

/** The default FILENAME_TEMPLATE's name, {{.Name}}-{{.ShortID}}{{.Ext}}, for a plain file name. */
export function defaultOutputName(envelope: Pick<Envelope, "filename" | "id">): string {
  const dot = envelope.filename.lastIndexOf(".");
  const [name, ext] =
    dot > 0 ? [envelope.filename.slice(0, dot), envelope.filename.slice(dot)] : [envelope.filename, ""];
  return `${name}-${envelope.id.replace(/-/g, "").slice(0, 8)}${ext}`;
}

/** Environment for a producer under test. */
export function producerEnv(natsUrl: string, extra: Record<string, string>): Record<string, string> {
  return {
    NATS_URL: natsUrl,
    RETRY_BACKOFF_MS: "100",
    ACK_WAIT_MS: "5000",
    SHUTDOWN_TIMEOUT_MS: "5000",
    DISK_SPACE_FACTOR: "2",
    ...extra,
  };
}

import { headers as natsHeaders, type MsgHdrs } from "@nats-io/nats-core";
import { v5 as uuidv5 } from "uuid";
import { z } from "zod";
import { EnvelopeError, type ErrorCode } from "./errors.js";

/**
 * The envelope (DESIGN §3): CloudEvents 1.0 in binary content mode over NATS
 * headers. This schema is the single definition; docs/envelope.schema.json is
 * generated from it.
 */

export const CE_TYPE = "io.filerelay.file.v1";
export const CE_SPECVERSION = "1.0";
/** Namespace for UUIDv5 file-version ids (stable across crashes and republishes). */
export const FILE_ID_NAMESPACE = "6f3c1f0e-3b7a-5d7e-9a51-2f1c0de5e1a7";

const RFC3339 = z.iso.datetime({ offset: true });
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const controlChars = /[\u0000-\u001f\u007f]/;

export const envelopeHeadersSchema = z
  .object({
    "Nats-Msg-Id": z.string().describe("Equals ce-id so JetStream drops duplicate publishes").optional(),
    "ce-specversion": z.literal(CE_SPECVERSION).describe("CloudEvents spec version"),
    "ce-id": z.uuid().describe("UUID of this file version; stable across a consumer crash and republish"),
    "ce-source": z.string().min(1).max(255).describe("The consumer's SOURCE name, e.g. api"),
    "ce-type": z.literal(CE_TYPE).describe("Event type"),
    "ce-time": RFC3339.describe("RFC 3339 UTC time the file was detected"),
    "ce-subject": z.string().min(1).max(4096).describe("Path relative to INPUT_DIR, '/'-separated"),
    "content-type": z
      .string()
      .max(255)
      .regex(/^[\w!#$&^.+-]+\/[\w!#$&^.+-]+(\s*;.*)?$/, "expected a MIME type such as text/csv")
      .describe("MIME type from the extension (application/octet-stream if unknown)"),
    "ce-filename": z.string().min(1).describe("Base name of the file"),
    "ce-filesize": z
      .string()
      .regex(/^\d{1,16}$/, "expected a non-negative whole number of bytes")
      .describe("Size in bytes (decimal string)"),
    "ce-sha256": z
      .string()
      .regex(/^[0-9a-f]{64}$/, "expected 64 lower-case hex digits")
      .describe("Hex SHA-256 of the full content"),
    "ce-mtime": RFC3339.describe("Source modification time, RFC 3339"),
    "ce-payload": z
      .string()
      .regex(/^(inline|object:[A-Za-z0-9_-]+\/.+)$/, "expected inline or object:<bucket>/<name>")
      .describe("inline (body holds the bytes) or object:<bucket>/<name> (JetStream Object Store)"),
    "ce-parentid": z
      .uuid()
      .describe("Extension: the ce-id this file was derived from (an archive entry, a converted file)")
      .optional(),
    "ce-jobid": z.string().min(1).max(255).describe("Extension: the upload job that published it").optional(),
    "ce-traceparent": z
      .string()
      .regex(/^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/, "expected a W3C traceparent")
      .describe("Extension: W3C trace context (CloudEvents distributed tracing)")
      .optional(),
    "ce-tracestate": z.string().max(512).describe("Extension: W3C trace state").optional(),
    "ce-destination": z
      .string()
      .min(1)
      .max(1024)
      .describe("Extension: a sink-side destination override (e.g. an S3 bucket), honoured only when allow-listed")
      .optional(),
  })
  .describe("filerelay envelope headers (CloudEvents 1.0 binary content mode over NATS)");

export type EnvelopeHeaders = z.infer<typeof envelopeHeadersSchema>;

export type PayloadRef = { kind: "inline" } | { kind: "object"; bucket: string; name: string };

/** A parsed, validated envelope. */
export interface Envelope {
  id: string;
  source: string;
  type: typeof CE_TYPE;
  time: Date;
  /** Path relative to INPUT_DIR, '/'-separated. */
  subject: string;
  contentType: string;
  filename: string;
  size: number;
  sha256: string;
  mtime: Date;
  payload: PayloadRef;
  /** Optional CloudEvents extensions (DESIGN §3); readers ignore what they do not know. */
  extensions?: EnvelopeExtensions | undefined;
}

/** The optional CloudEvents extensions an envelope may carry (lower-case names, as CloudEvents requires). */
export interface EnvelopeExtensions {
  parentid?: string | undefined;
  jobid?: string | undefined;
  traceparent?: string | undefined;
  tracestate?: string | undefined;
  destination?: string | undefined;
}

/** The extension attributes, in header order. */
export const EXTENSION_NAMES = ["parentid", "jobid", "traceparent", "tracestate", "destination"] as const;

export const HEADER_NAMES = Object.keys(envelopeHeadersSchema.shape) as (keyof EnvelopeHeaders)[];
const HEADER_NAMES_BY_LOWER_CASE: ReadonlyMap<string, string> = new Map(HEADER_NAMES.map((n) => [n.toLowerCase(), n]));

/** Longest file-name component most filesystems accept, in bytes. */
export const MAX_NAME_BYTES = 255;

export function parsePayloadRef(value: string): PayloadRef {
  if (value === "inline") return { kind: "inline" };
  const m = /^object:([A-Za-z0-9_-]+)\/(.+)$/.exec(value);
  if (!m?.[1] || !m[2])
    throw new EnvelopeError("ENVELOPE_INVALID", `ce-payload: cannot parse ${JSON.stringify(value)}`);
  return { kind: "object", bucket: m[1], name: m[2] };
}

export function formatPayloadRef(ref: PayloadRef): string {
  return ref.kind === "inline" ? "inline" : `object:${ref.bucket}/${ref.name}`;
}

/** Reads the envelope headers out of NATS headers (absent ones left out). */
export function headersToRecord(hdrs: MsgHdrs | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!hdrs) return out;
  for (const [k, values] of hdrs) {
    if (values[0] !== undefined) out[k] = values[0];
  }
  return out;
}

/**
 * Envelope headers that appear more than once, or in another letter case next
 * to the real one (e.g. smuggled in with CR/LF by a hostile publisher). Clients
 * disagree on which value wins, so such an envelope is refused, not guessed at.
 */
export function ambiguousHeaders(hdrs: MsgHdrs): string[] {
  const known = HEADER_NAMES_BY_LOWER_CASE;
  const seen = new Map<string, number>();
  for (const [k, values] of hdrs) {
    const name = known.get(k.toLowerCase());
    if (name !== undefined) seen.set(name, (seen.get(name) ?? 0) + values.length);
  }
  return [...seen].filter(([, n]) => n > 1).map(([name]) => name);
}

function fail(code: ErrorCode, message: string): never {
  throw new EnvelopeError(code, message);
}

/**
 * Validates envelope headers and returns the typed envelope, or throws an
 * EnvelopeError whose code says what is wrong (ENVELOPE_INVALID, PATH_UNSAFE,
 * NAME_INVALID) and whose message names every offending header.
 */
export function parseEnvelope(input: MsgHdrs | Record<string, string> | undefined): Envelope {
  const isHdrs = !!input && typeof (input as MsgHdrs).get === "function";
  if (isHdrs) {
    const ambiguous = ambiguousHeaders(input as MsgHdrs);
    if (ambiguous.length > 0) {
      fail("ENVELOPE_INVALID", `ambiguous envelope: ${ambiguous.join(", ")} present more than once`);
    }
  }
  const record = isHdrs ? headersToRecord(input as MsgHdrs) : (input as Record<string, string> | undefined);
  const result = envelopeHeadersSchema.safeParse(record ?? {});
  if (!result.success) {
    const problems = result.error.issues.map((i) => {
      const header = String(i.path[0] ?? "(headers)");
      const missing = record?.[header] === undefined;
      return `${header}: ${missing ? "missing" : i.message}`;
    });
    fail("ENVELOPE_INVALID", `invalid envelope: ${problems.join("; ")}`);
  }
  const h = result.data;
  for (const [name, value] of Object.entries(h)) {
    if (typeof value === "string" && controlChars.test(value)) {
      fail(
        name === "ce-subject" || name === "ce-filename" ? "NAME_INVALID" : "ENVELOPE_INVALID",
        `${name}: contains control characters`,
      );
    }
  }
  const subject = h["ce-subject"];
  if (subject.startsWith("/") || subject.includes("\\") || /^[A-Za-z]:/.test(subject)) {
    fail("PATH_UNSAFE", `ce-subject: must be a relative '/'-separated path, got ${JSON.stringify(subject)}`);
  }
  const segments = subject.split("/");
  if (segments.some((s) => s === ".." || s === "." || s === "")) {
    fail("PATH_UNSAFE", `ce-subject: '.', '..' and empty segments are not allowed, got ${JSON.stringify(subject)}`);
  }
  const filename = h["ce-filename"];
  if (filename.includes("/") || filename.includes("\\") || filename === "." || filename === "..") {
    fail("PATH_UNSAFE", `ce-filename: must be a base name, got ${JSON.stringify(filename)}`);
  }
  if (Buffer.byteLength(filename) > MAX_NAME_BYTES || segments.some((s) => Buffer.byteLength(s) > MAX_NAME_BYTES)) {
    fail("NAME_INVALID", `ce-filename/ce-subject: a name component is longer than ${MAX_NAME_BYTES} bytes`);
  }
  if (segments[segments.length - 1] !== filename) {
    fail("ENVELOPE_INVALID", `ce-filename ${JSON.stringify(filename)} is not the last segment of ce-subject`);
  }
  const size = Number(h["ce-filesize"]);
  if (!Number.isSafeInteger(size)) fail("ENVELOPE_INVALID", `ce-filesize: ${h["ce-filesize"]} is too large`);
  let extensions: EnvelopeExtensions | undefined;
  for (const name of EXTENSION_NAMES) {
    const value = h[`ce-${name}`];
    if (value !== undefined) (extensions ??= {})[name] = value;
  }
  return {
    id: h["ce-id"],
    source: h["ce-source"],
    type: CE_TYPE,
    time: new Date(h["ce-time"]),
    subject,
    contentType: h["content-type"],
    filename,
    size,
    sha256: h["ce-sha256"],
    mtime: new Date(h["ce-mtime"]),
    payload: parsePayloadRef(h["ce-payload"]),
    ...(extensions ? { extensions } : {}),
  };
}

/** The header record for an envelope (what goes on the wire). */
export function envelopeToRecord(env: Envelope): EnvelopeHeaders & { "Nats-Msg-Id": string } {
  const record: EnvelopeHeaders & { "Nats-Msg-Id": string } = {
    "Nats-Msg-Id": env.id,
    "ce-specversion": CE_SPECVERSION,
    "ce-id": env.id,
    "ce-source": env.source,
    "ce-type": CE_TYPE,
    "ce-time": env.time.toISOString(),
    "ce-subject": env.subject,
    "content-type": env.contentType,
    "ce-filename": env.filename,
    "ce-filesize": String(env.size),
    "ce-sha256": env.sha256,
    "ce-mtime": env.mtime.toISOString(),
    "ce-payload": formatPayloadRef(env.payload),
  };
  for (const name of EXTENSION_NAMES) {
    const value = env.extensions?.[name];
    if (value !== undefined) record[`ce-${name}`] = value;
  }
  return record;
}

export function envelopeToHeaders(env: Envelope): MsgHdrs {
  const hdrs = natsHeaders();
  for (const [k, v] of Object.entries(envelopeToRecord(env))) hdrs.set(k, v);
  return hdrs;
}

/** UUIDv5 of a fingerprint: the same file version always gets the same ce-id. */
export function fileVersionId(fingerprint: string): string {
  return uuidv5(fingerprint, FILE_ID_NAMESPACE);
}

/** The envelope JSON Schema (docs/envelope.schema.json is this, pretty-printed). */
export function envelopeJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(envelopeHeadersSchema, { target: "draft-2020-12" });
}

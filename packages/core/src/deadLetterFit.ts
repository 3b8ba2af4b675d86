import { HEADER_NAMES } from "./envelope.js";

/**
 * Fitting a dead letter into one message. The broker refuses a message whose
 * header block exceeds 65,535 bytes (JetStream) or whose headers + body exceed
 * the connection's max_payload; a message that was stored in the envelope
 * stream may still not fit once the filerelay-* headers are added. A dead
 * letter that cannot be stored is never settled, so it must always fit: what
 * does not is trimmed (the body first given up, then long or surplus original
 * headers), and the dead letter says so. Pure functions: the caller publishes.
 */

/** Largest header block JetStream stores (bytes, "NATS/1.0" line and blank line included). */
export const JETSTREAM_MAX_HEADER_BYTES = 65_535;
/** Longest original header value a dead letter carries, even when everything fits. */
export const DEAD_LETTER_VALUE_MAX_BYTES = 8192;
/** Envelope headers are cut no shorter than this before the body is given up. */
const KEY_VALUE_MIN_BYTES = 1024;
/** Other headers are dropped rather than cut shorter than this. */
const OTHER_VALUE_MIN_BYTES = 256;
/** Room kept for the headers that describe a trimmed dead letter. */
const TRUNCATION_HEADERS_RESERVE = 160;
const ELLIPSIS = "…";

const KEY_HEADERS: ReadonlySet<string> = new Set(
  HEADER_NAMES.filter((n) => n !== "Nats-Msg-Id").map((n) => n.toLowerCase()),
);

export interface DeadLetterLimits {
  /** The connection's max_payload: header block + body. */
  maxPayload: number;
  /** Default JETSTREAM_MAX_HEADER_BYTES. */
  maxHeaderBytes?: number;
}

export type TruncatedPart = "headers" | "body";

export interface FittedDeadLetter {
  /** The original headers to copy, in their order, values cleaned and possibly cut. */
  headers: [string, string][];
  keepBody: boolean;
  /** What was cut or left out; empty when the dead letter is the whole original. */
  truncated: TruncatedPart[];
  /** Size of the original header block (as it would be encoded). */
  originalHeaderBytes: number;
}

/** Bytes of one `\r\nkey: value` line in an encoded header block. */
function lineBytes(key: string, value: string): number {
  return 4 + Buffer.byteLength(key) + Buffer.byteLength(value);
}

/** Encoded size of a header block holding `entries` ("NATS/1.0" ... "\r\n\r\n"). */
export function headerBlockBytes(entries: Iterable<readonly [string, string]>): number {
  let n = "NATS/1.0".length + 4;
  for (const [k, v] of entries) n += lineBytes(k, v);
  return n;
}

/** One line, no control characters (a header value cannot hold CR or LF). */
export function cleanHeaderValue(text: string): string {
  // eslint-disable-next-line no-control-regex -- stripping control characters is the point
  return text.replace(/[\u0000-\u001f\u007f]+/g, " ").trim();
}

/** `text` cut to at most `maxBytes` UTF-8 bytes (ending in "…" when cut), never inside a character. */
export function cutToBytes(text: string, maxBytes: number): string {
  if (Buffer.byteLength(text) <= maxBytes) return text;
  const room = maxBytes - Buffer.byteLength(ELLIPSIS);
  if (room <= 0) return "";
  let used = 0;
  let end = 0;
  for (const ch of text) {
    const n = Buffer.byteLength(ch);
    if (used + n > room) break;
    used += n;
    end += ch.length;
  }
  return `${text.slice(0, end).trimEnd()}${ELLIPSIS}`;
}

/** What the NATS client accepts as a header name: printable ASCII without ':'. */
function validHeaderName(key: string): boolean {
  return key.length > 0 && /^[\x21-\x39\x3b-\x7e]+$/.test(key);
}

/**
 * Headers of the original never copied into a dead letter: the dedup id (the
 * dead letter has its own), earlier filerelay-* headers (replaced by ours),
 * and other Nats-* headers, which are directives to the broker for the
 * original publish (Nats-Expected-Stream, ...) that would make the DLQ stream
 * refuse the copy.
 */
function dropped(key: string): "replaced" | "directive" | undefined {
  const lower = key.toLowerCase();
  if (lower === "nats-msg-id" || lower.startsWith("filerelay-")) return "replaced";
  if (lower.startsWith("nats-")) return "directive";
  return undefined;
}

interface Candidate {
  key: string;
  /** Cleaned and capped at DEAD_LETTER_VALUE_MAX_BYTES. */
  full: string;
  isKey: boolean;
  /** The value it gets in the dead letter; undefined = left out. */
  value?: string;
}

/**
 * Decides which original headers a dead letter carries and whether its body
 * does, so that `own` (the filerelay-* headers, always kept) plus the result
 * fit `limits`. Envelope headers (ce-*, content-type) are kept in preference
 * to others; the body is given up only when even the envelope headers, cut to
 * 1 KiB each, would not fit next to it.
 */
export function fitDeadLetter(
  original: Readonly<Record<string, string>>,
  own: readonly (readonly [string, string])[],
  bodyBytes: number,
  limits: DeadLetterLimits,
): FittedDeadLetter {
  const originalHeaderBytes = headerBlockBytes(Object.entries(original));
  let headersCut = false;
  const candidates: Candidate[] = [];
  for (const [key, raw] of Object.entries(original)) {
    const why = dropped(key);
    if (why === "replaced") continue;
    if (why === "directive" || !validHeaderName(key)) {
      headersCut = true;
      continue;
    }
    const clean = cleanHeaderValue(raw);
    const full = cutToBytes(clean, DEAD_LETTER_VALUE_MAX_BYTES);
    if (full !== clean) headersCut = true;
    candidates.push({ key, full, isKey: KEY_HEADERS.has(key.toLowerCase()) });
  }

  const fixed = headerBlockBytes(own) + TRUNCATION_HEADERS_RESERVE;
  const headerLimit = Math.min(limits.maxHeaderBytes ?? JETSTREAM_MAX_HEADER_BYTES, limits.maxPayload);
  const fullSize = fixed + candidates.reduce((n, c) => n + lineBytes(c.key, c.full), 0);
  if (fullSize <= headerLimit && fullSize + bodyBytes <= limits.maxPayload) {
    return {
      headers: candidates.map((c) => [c.key, c.full]),
      keepBody: true,
      truncated: headersCut ? ["headers"] : [],
      originalHeaderBytes,
    };
  }

  const minimal = (c: Candidate) => cutToBytes(c.full, KEY_VALUE_MIN_BYTES);
  const keySize = fixed + candidates.filter((c) => c.isKey).reduce((n, c) => n + lineBytes(c.key, minimal(c)), 0);
  const keepBody = bodyBytes === 0 || (keySize <= headerLimit && keySize + bodyBytes <= limits.maxPayload);
  let room = Math.min(headerLimit, limits.maxPayload - (keepBody ? bodyBytes : 0)) - fixed;

  // Envelope headers first, each at a short length; then the others at a
  // shorter one while they fit; then every kept value grows back toward its
  // full length, envelope headers first, as far as the room allows.
  const place = (c: Candidate, maxBytes: number, minBytes: number) => {
    const overhead = lineBytes(c.key, "");
    const fits = Math.min(maxBytes, room - overhead);
    if (fits < Math.min(minBytes, Buffer.byteLength(c.full))) return;
    c.value = cutToBytes(c.full, fits);
    room -= lineBytes(c.key, c.value);
  };
  for (const c of candidates) if (c.isKey) place(c, KEY_VALUE_MIN_BYTES, 0);
  for (const c of candidates) if (!c.isKey) place(c, OTHER_VALUE_MIN_BYTES, OTHER_VALUE_MIN_BYTES);
  for (const c of [...candidates.filter((x) => x.isKey), ...candidates.filter((x) => !x.isKey)]) {
    if (c.value === undefined || c.value === c.full) continue;
    const current = Buffer.byteLength(c.value);
    room += current;
    const grown = cutToBytes(c.full, Math.max(current, Math.min(Buffer.byteLength(c.full), room)));
    c.value = Buffer.byteLength(grown) <= room ? grown : c.value;
    room -= Buffer.byteLength(c.value);
  }

  const headers: [string, string][] = [];
  for (const c of candidates) {
    if (c.value !== c.full) headersCut = true;
    if (c.value !== undefined) headers.push([c.key, c.value]);
  }
  const truncated: TruncatedPart[] = [];
  if (headersCut) truncated.push("headers");
  if (!keepBody) truncated.push("body");
  return { headers, keepBody, truncated, originalHeaderBytes };
}

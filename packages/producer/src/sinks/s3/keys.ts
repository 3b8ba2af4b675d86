import { SinkError } from "@filerelay/core";

const MAX_KEY_BYTES = 1024;

/** Normalized prefix: no leading '/', a trailing '/' unless empty. */
export function normalizePrefix(prefix: string | undefined): string {
  const p = (prefix ?? "").replace(/^\/+/, "");
  return p === "" || p.endsWith("/") ? p : `${p}/`;
}

// eslint-disable-next-line no-control-regex -- matching control characters is the point
const unsafeKeyChars = /[\u0000-\u001f\u007f\\]/;

/**
 * The object key for an organized path. The organizer already sanitized it;
 * this is the last line of defence so nothing lands outside S3_PREFIX (some
 * gateways and sync tools resolve '..' in keys).
 */
export function objectKey(prefix: string, path: string): string {
  const segments = path.split("/");
  if (path.startsWith("/") || unsafeKeyChars.test(path) || segments.some((s) => s === "" || s === "." || s === "..")) {
    throw new SinkError("PATH_UNSAFE", `refusing S3 key for unsafe path ${JSON.stringify(path)}`);
  }
  const key = prefix + path;
  if (Buffer.byteLength(key) > MAX_KEY_BYTES)
    throw new SinkError("NAME_INVALID", `S3 key is longer than ${MAX_KEY_BYTES} bytes: ${JSON.stringify(key)}`);
  return key;
}

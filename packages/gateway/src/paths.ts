import { posix } from "node:path";
import { HttpError } from "./httpError.js";

/** Longest file or directory name, in bytes (as core's envelope check). */
const MAX_NAME_BYTES = 255;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

/**
 * The base name of a client-supplied file name. Browsers and some clients send
 * a full local path (`C:\Users\me\a.csv`): only its last segment is kept.
 */
export function sanitizeFilename(raw: string | undefined): string {
  const name = (raw ?? "").split(/[/\\]/).pop()?.trim() ?? "";
  if (name === "" || name === "." || name === "..") {
    throw new HttpError(400, "NAME_INVALID", `file name ${JSON.stringify(raw ?? "")} is not usable`);
  }
  checkSegment(name);
  return name;
}

/**
 * The ce-subject of an upload: an optional client `path` (a directory, or a
 * directory plus the file name when it ends in the name itself) joined with
 * the file name, made relative and '/'-separated like the consumer's paths.
 * Leading slashes, backslashes, empty and '.' segments are normalised away;
 * '..' is refused rather than resolved, so nothing is silently re-rooted.
 */
export function uploadSubject(filename: string, path: string | undefined): string {
  const name = sanitizeFilename(filename);
  if (path === undefined || path.trim() === "") return name;
  const segments = path
    .split(/[/\\]/)
    .map((s) => s.trim())
    .filter((s) => s !== "" && s !== ".");
  if (segments.some((s) => s === "..")) {
    throw new HttpError(400, "PATH_UNSAFE", `path ${JSON.stringify(path)}: '..' segments are not allowed`);
  }
  for (const s of segments) checkSegment(s);
  if (/^[A-Za-z]:$/.test(segments[0] ?? "")) segments.shift();
  // `path=dir/a.csv` for file a.csv names the file itself; `path=dir` names its directory.
  if (segments[segments.length - 1] === name) segments.pop();
  const subject = posix.join(...segments, name);
  if (Buffer.byteLength(subject) > 4096) throw new HttpError(400, "NAME_INVALID", "path is longer than 4096 bytes");
  return subject;
}

function checkSegment(s: string): void {
  if (CONTROL.test(s)) throw new HttpError(400, "NAME_INVALID", "names must not contain control characters");
  if (Buffer.byteLength(s) > MAX_NAME_BYTES) {
    throw new HttpError(400, "NAME_INVALID", `a name is longer than ${MAX_NAME_BYTES} bytes`);
  }
}

/** `text/csv; charset=utf-8` matches `text/csv`, `text/*` and `*\/*` (as the producer's ALLOWED_CONTENT_TYPES). */
export function contentTypeAllowed(contentType: string, allowed: readonly string[] | undefined): boolean {
  if (!allowed) return true;
  const type = (contentType.split(";")[0] ?? "").trim().toLowerCase();
  const major = type.split("/")[0];
  return allowed.some((raw) => {
    const a = raw.toLowerCase();
    return a === type || a === "*/*" || a === "*" || (a.endsWith("/*") && a.slice(0, -2) === major);
  });
}

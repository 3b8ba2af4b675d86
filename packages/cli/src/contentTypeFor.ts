import { extname } from "node:path";

/**
 * MIME types of common extensions, as the `mime` package (which the consumer
 * uses) reports them. The CLI has no `mime` dependency; until the consumer
 * exports its lookup, rarer extensions fall back to application/octet-stream
 * and `send --content-type` overrides.
 */
const TYPES: Readonly<Record<string, string>> = {
  csv: "text/csv",
  tsv: "text/tab-separated-values",
  txt: "text/plain",
  log: "text/plain",
  md: "text/markdown",
  html: "text/html",
  htm: "text/html",
  ics: "text/calendar",
  yaml: "text/yaml",
  yml: "text/yaml",
  json: "application/json",
  xml: "application/xml",
  pdf: "application/pdf",
  zip: "application/zip",
  gz: "application/gzip",
  tar: "application/x-tar",
  bin: "application/octet-stream",
  doc: "application/msword",
  docx: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
  xls: "application/vnd.ms-excel",
  xlsx: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
  png: "image/png",
  jpg: "image/jpeg",
  jpeg: "image/jpeg",
  gif: "image/gif",
  webp: "image/webp",
  svg: "image/svg+xml",
  mp3: "audio/mpeg",
  wav: "audio/wav",
  mp4: "video/mp4",
};

export function contentTypeFor(path: string): string {
  return TYPES[extname(path).slice(1).toLowerCase()] ?? "application/octet-stream";
}

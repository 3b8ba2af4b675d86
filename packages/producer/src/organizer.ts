import { extname, resolve, sep } from "node:path";
import { MAX_NAME_BYTES, SinkError, truncateUtf8, type Envelope } from "@filerelay/core/internal";
import type { OrganizeBy } from "./config.js";
import { parseTemplate, type FilenameTemplate, type TemplateValues } from "./template.js";

/**
 * Builds the output path of a file version from ORGANIZE_BY and
 * FILENAME_TEMPLATE (DESIGN §4, §5): a relative, '/'-separated path that the
 * fs sink joins to OUTPUT_DIR and the s3 sink appends to S3_PREFIX.
 */
export interface Organizer {
  /** The sanitized relative path; throws a permanent SinkError (PATH_UNSAFE / NAME_INVALID) if none is safe. */
  pathFor(envelope: Envelope, now?: Date): string;
}

export interface OrganizerConfig {
  ORGANIZE_BY: OrganizeBy;
  FILENAME_TEMPLATE: string;
}

export function createOrganizer(config: OrganizerConfig): Organizer {
  const template = parseTemplate(config.FILENAME_TEMPLATE);
  return { pathFor: (envelope, now = new Date()) => organize(config.ORGANIZE_BY, template, envelope, now) };
}

// eslint-disable-next-line no-control-regex -- stripping control characters is the point
const UNSAFE_CHARS = /[/\\\u0000-\u001f\u007f]/g;

/**
 * Makes an envelope value safe inside one path component: separators,
 * backslashes, NUL and other control characters become '_'. Whole-component
 * rules ('..', leading dots, length) are applied after the template renders.
 */
export function sanitizeValue(value: string): string {
  return value.replace(UNSAFE_CHARS, "_");
}

/**
 * A path component that can be used as is: no leading dot (so never '.', '..',
 * a hidden file or our temp-file pattern), never empty, at most 255 bytes
 * (truncated keeping the extension, on a UTF-8 character boundary).
 */
export function sanitizeComponent(component: string, maxBytes = MAX_NAME_BYTES): string {
  const clean = sanitizeValue(component).replace(/^\.+/, "_");
  return fitName(clean.length === 0 ? "_" : clean, maxBytes);
}

/** Truncates `name` to `maxBytes` of UTF-8, keeping a short extension. */
export function fitName(name: string, maxBytes = MAX_NAME_BYTES): string {
  if (Buffer.byteLength(name) <= maxBytes) return name;
  const ext = extname(name);
  const keepExt = ext.length > 0 && Buffer.byteLength(ext) <= 32 ? ext : "";
  const stem = name.slice(0, name.length - keepExt.length);
  return truncateUtf8(stem, maxBytes - Buffer.byteLength(keepExt)) + keepExt;
}

const pad = (n: number) => String(n).padStart(2, "0");

/** The template values of an envelope, each sanitized (RelDir per segment). */
export function templateValues(envelope: Envelope, now: Date): TemplateValues {
  const ext = extname(envelope.filename);
  const name = envelope.filename.slice(0, envelope.filename.length - ext.length);
  const year = String(now.getUTCFullYear());
  const month = pad(now.getUTCMonth() + 1);
  const day = pad(now.getUTCDate());
  const relDir = envelope.subject.split("/").slice(0, -1).map(sanitizeValue).join("/");
  const type = ext.length > 1 ? ext.slice(1).toLowerCase() : "unknown";
  return {
    ID: sanitizeValue(envelope.id),
    ShortID: sanitizeValue(envelope.id.replace(/-/g, "").slice(0, 8)),
    Name: sanitizeValue(name),
    Ext: sanitizeValue(ext),
    Source: sanitizeValue(envelope.source),
    Type: sanitizeValue(type),
    Date: `${year}-${month}-${day}`,
    Year: year,
    Month: month,
    Day: day,
    RelDir: relDir,
  };
}

function organize(by: OrganizeBy, template: FilenameTemplate, envelope: Envelope, now: Date): string {
  const values = templateValues(envelope, now);
  const prefix =
    by === "date"
      ? [values.Year, values.Month, values.Day]
      : by === "type"
        ? [values.Type]
        : by === "source"
          ? [values.Source]
          : [];
  const rendered = template.render(values);
  // Empty segments come from an empty {{.RelDir}}: collapse them.
  const segments = [...prefix, ...rendered.split("/")].filter((s) => s.length > 0).map((s) => sanitizeComponent(s));
  if (segments.length === 0) {
    throw new SinkError(
      "NAME_INVALID",
      `FILENAME_TEMPLATE produced an empty name for ${JSON.stringify(envelope.subject)}`,
    );
  }
  const path = segments.join("/");
  assertSafeRelative(path);
  return path;
}

/** Rejects anything that is not a plain relative '/'-path of safe components. */
export function assertSafeRelative(path: string): void {
  const bad = path
    .split("/")
    .find(
      (s) =>
        s === "" ||
        s === "." ||
        s === ".." ||
        s.includes("\\") ||
        s.includes("\0") ||
        Buffer.byteLength(s) > MAX_NAME_BYTES,
    );
  if (bad !== undefined || path.startsWith("/")) {
    throw new SinkError("PATH_UNSAFE", `output path ${JSON.stringify(path)} is not a safe relative path`);
  }
}

/** OUTPUT_DIR joined with a relative output path, guaranteed to stay inside it. */
export function resolveInside(root: string, path: string): string {
  assertSafeRelative(path);
  const base = resolve(root);
  const abs = resolve(base, ...path.split("/"));
  if (!abs.startsWith(base.endsWith(sep) ? base : base + sep)) {
    throw new SinkError("PATH_UNSAFE", `output path ${JSON.stringify(path)} would leave ${base}`);
  }
  return abs;
}

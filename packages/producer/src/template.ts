import { ConfigError } from "@filerelay/core";

/** Placeholders of FILENAME_TEMPLATE (DESIGN §4). */
export const TEMPLATE_PLACEHOLDERS = [
  "ID",
  "ShortID",
  "Name",
  "Ext",
  "Source",
  "Type",
  "Date",
  "Year",
  "Month",
  "Day",
  "RelDir",
] as const;

export type TemplatePlaceholder = (typeof TEMPLATE_PLACEHOLDERS)[number];
export type TemplateValues = Record<TemplatePlaceholder, string>;

export type TemplatePart = { literal: string } | { placeholder: TemplatePlaceholder };

/** A parsed FILENAME_TEMPLATE: literal text and placeholders, in order. */
export interface FilenameTemplate {
  readonly source: string;
  readonly parts: readonly TemplatePart[];
  /** Concatenates the parts with `values` (already sanitized by the caller). */
  render(values: TemplateValues): string;
}

const TOKEN = /\{\{\s*\.?([A-Za-z]*)\s*\}\}/g;
const KNOWN = new Set<string>(TEMPLATE_PLACEHOLDERS);

/**
 * Parses a Go-template-like file-name template once, at start-up. Literal text
 * may contain '/' to make sub-directories, but never absolute paths, '..' or
 * '.' segments, backslashes or control characters; an unknown placeholder or a
 * stray brace is a configuration error (exit 78).
 */
export function parseTemplate(source: string): FilenameTemplate {
  const { parts, problems } = analyse(source);
  if (problems.length > 0) throw new ConfigError(problems.map((p) => `FILENAME_TEMPLATE: ${p}`));
  return {
    source,
    parts,
    render: (values) => parts.map((p) => ("literal" in p ? p.literal : values[p.placeholder])).join(""),
  };
}

/** What is wrong with a template (empty when it is usable). */
export function templateProblems(source: string): string[] {
  return analyse(source).problems;
}

function analyse(source: string): { parts: TemplatePart[]; problems: string[] } {
  const problems: string[] = [];
  const parts: TemplatePart[] = [];
  let last = 0;
  for (const m of source.matchAll(TOKEN)) {
    if (m.index > last) parts.push({ literal: source.slice(last, m.index) });
    const name = m[1] ?? "";
    if (KNOWN.has(name) && m[0].includes(".")) parts.push({ placeholder: name as TemplatePlaceholder });
    else
      problems.push(`unknown placeholder ${m[0]} (known: ${TEMPLATE_PLACEHOLDERS.map((p) => `{{.${p}}}`).join(" ")})`);
    last = m.index + m[0].length;
  }
  if (last < source.length) parts.push({ literal: source.slice(last) });

  const literals = parts.flatMap((p) => ("literal" in p ? [p.literal] : []));
  for (const text of literals) {
    if (text.includes("{{") || text.includes("}}")) problems.push(`unbalanced braces in ${JSON.stringify(text)}`);
    // eslint-disable-next-line no-control-regex -- rejecting control characters is the point
    if (/[\u0000-\u001f\u007f\\]/.test(text)) problems.push("backslashes and control characters are not allowed");
  }
  if (source.startsWith("/")) problems.push("must be relative (no leading '/')");
  // Segments are judged on the literal skeleton: placeholders cannot produce '/' (except RelDir, sanitized per segment).
  const skeleton = parts.map((p) => ("literal" in p ? p.literal : "x")).join("");
  if (skeleton.split("/").some((s) => s === "." || s === "..")) problems.push("'.' and '..' segments are not allowed");
  if (skeleton.endsWith("/")) problems.push("must end with a file name, not '/'");
  return { parts, problems };
}

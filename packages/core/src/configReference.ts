import { isDeepStrictEqual } from "node:util";
import type { z } from "zod";
import { FilerelayError } from "./errors.js";

/**
 * The README's configuration reference, generated from the services' zod
 * schemas (scripts/gen-config-reference.mjs writes it; a test fails when the
 * README's copy differs), so a variable, its default and its meaning are
 * written down once, in the schema.
 */

export const CONFIG_REFERENCE_START = "<!-- config-reference:start -->";
export const CONFIG_REFERENCE_END = "<!-- config-reference:end -->";

/** One service's environment schema: the object shape keyed by variable name. */
export interface ConfigSchemaSource {
  service: string;
  shape: Readonly<Record<string, z.ZodType>>;
}

export interface ConfigReferenceRow {
  variable: string;
  services: string[];
  /** As one would write it in the environment; null when unset by default. */
  defaultValue: string | null;
  /** Set instead of defaultValue when the services' defaults differ (e.g. HTTP_PORT). */
  defaultsByService: Record<string, string | null> | null;
  required: boolean;
  description: string;
}

interface FieldInfo {
  service: string;
  description: string;
  defaultValue: string | null;
  required: boolean;
}

function descriptionOf(schema: z.ZodType): string | undefined {
  if (schema.description) return schema.description;
  const def = schema.def as { type: string; innerType?: z.ZodType; in?: z.ZodType; out?: z.ZodType };
  for (const inner of [def.innerType, def.in, def.out]) {
    const found = inner ? descriptionOf(inner) : undefined;
    if (found) return found;
  }
  return undefined;
}

/** Whole numbers that are multiples of 1 KiB read better as 256KiB; envBytes accepts both. */
function byteForm(n: number): string | undefined {
  for (const [unit, size] of [
    ["GiB", 1024 ** 3],
    ["MiB", 1024 ** 2],
    ["KiB", 1024],
  ] as const) {
    if (n >= size && n % size === 0) return `${n / size}${unit}`;
  }
  return undefined;
}

/** Milliseconds that are whole days, hours, minutes or seconds read better as 30d; envDuration accepts both. */
function durationForm(ms: number): string | undefined {
  for (const [unit, size] of [
    ["d", 86_400_000],
    ["h", 3_600_000],
    ["m", 60_000],
    ["s", 1000],
  ] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return undefined;
}

/**
 * The default as an environment value. A candidate spelling is accepted only
 * if parsing it with the field's own schema gives the default back, so the
 * table never shows a value that would mean something else (e.g. FILE_MODE's
 * default 416 is written 0640).
 */
function formatDefault(value: unknown, inner: z.ZodType): string {
  const candidates: string[] = [];
  if (typeof value === "number") {
    const bytes = byteForm(value);
    if (bytes) candidates.push(bytes);
    const duration = durationForm(value);
    if (duration) candidates.push(duration);
    candidates.push(String(value), `0${value.toString(8)}`);
  } else if (Array.isArray(value)) {
    candidates.push(value.map(String).join(","));
  } else {
    candidates.push(String(value));
  }
  for (const candidate of candidates) {
    const parsed = inner.safeParse(candidate);
    if (parsed.success && isDeepStrictEqual(parsed.data, value)) return candidate;
  }
  return candidates.at(-1) ?? String(value);
}

function fieldInfo(service: string, schema: z.ZodType): FieldInfo {
  const description = descriptionOf(schema) ?? "";
  const def = schema.def as { type: string; defaultValue?: unknown; innerType?: z.ZodType };
  if (def.type === "default" && def.innerType) {
    return { service, description, defaultValue: formatDefault(def.defaultValue, def.innerType), required: false };
  }
  return { service, description, defaultValue: null, required: !schema.safeParse(undefined).success };
}

/**
 * One row per variable, or per distinct meaning when services describe the
 * same variable differently (e.g. CONCURRENCY), in first-seen order.
 */
export function configReferenceRows(sources: readonly ConfigSchemaSource[]): ConfigReferenceRow[] {
  const byVariable = new Map<string, FieldInfo[]>();
  for (const { service, shape } of sources) {
    for (const [variable, schema] of Object.entries(shape)) {
      byVariable.set(variable, [...(byVariable.get(variable) ?? []), fieldInfo(service, schema)]);
    }
  }
  const rows: ConfigReferenceRow[] = [];
  for (const [variable, infos] of byVariable) {
    const meanings = new Map<string, FieldInfo[]>();
    for (const info of infos) meanings.set(info.description, [...(meanings.get(info.description) ?? []), info]);
    for (const [description, group] of meanings) {
      const same = new Set(group.map((g) => g.defaultValue)).size === 1;
      rows.push({
        variable,
        services: group.map((g) => g.service),
        defaultValue: same ? (group[0]?.defaultValue ?? null) : null,
        defaultsByService: same ? null : Object.fromEntries(group.map((g) => [g.service, g.defaultValue])),
        required: group.some((g) => g.required),
        description,
      });
    }
  }
  return rows;
}

function cell(text: string): string {
  // Inside a table: pipes end the cell; '<' would start an HTML tag; '*' emphasis.
  return text.replace(/\\/g, "\\\\").replace(/\|/g, "\\|").replace(/</g, "&lt;").replace(/\*/g, "\\*");
}

/** A default as a code span; an empty list or string has no code span to show. */
function code(text: string): string {
  return text === "" ? "empty" : `\`${text.replace(/\|/g, "\\|")}\``;
}

/** The markdown table (variable, services, default, meaning), without markers. */
export function renderConfigReference(sources: readonly ConfigSchemaSource[]): string {
  const lines = ["| variable | services | default | meaning |", "| --- | --- | --- | --- |"];
  for (const row of configReferenceRows(sources)) {
    const defaultCell = row.required
      ? "**required**"
      : row.defaultsByService
        ? Object.entries(row.defaultsByService)
            .map(([service, value]) => `${service}: ${value === null ? "unset" : code(value)}`)
            .join(", ")
        : row.defaultValue === null
          ? "unset"
          : code(row.defaultValue);
    lines.push(`| ${code(row.variable)} | ${row.services.join(", ")} | ${defaultCell} | ${cell(row.description)} |`);
  }
  return `${lines.join("\n")}\n`;
}

/** `markdown` with the text between the markers replaced by `table`; throws if the markers are missing. */
export function replaceConfigReference(markdown: string, table: string): string {
  const start = markdown.indexOf(CONFIG_REFERENCE_START);
  const end = markdown.indexOf(CONFIG_REFERENCE_END);
  if (start < 0 || end < start) {
    throw new FilerelayError(
      "CONFIG_INVALID",
      `missing ${CONFIG_REFERENCE_START} … ${CONFIG_REFERENCE_END} markers around the configuration reference`,
    );
  }
  return `${markdown.slice(0, start + CONFIG_REFERENCE_START.length)}\n\n${table}\n${markdown.slice(end)}`;
}

/** The text between the markers (trimmed), or undefined without markers. */
export function extractConfigReference(markdown: string): string | undefined {
  const start = markdown.indexOf(CONFIG_REFERENCE_START);
  const end = markdown.indexOf(CONFIG_REFERENCE_END);
  if (start < 0 || end < start) return undefined;
  return markdown.slice(start + CONFIG_REFERENCE_START.length, end).trim();
}

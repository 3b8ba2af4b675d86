import Table from "cli-table3";

/**
 * A plain table for humans (no colours: output is often piped or logged).
 * `widths` (one per column, null = as wide as its content) wraps long cells.
 */
export function renderTable(
  head: readonly string[],
  rows: readonly (readonly (string | number)[])[],
  widths?: readonly (number | null)[],
): string {
  const table = new Table({
    head: [...head],
    style: { head: [], border: [] },
    ...(widths ? { colWidths: [...widths], wordWrap: true, wrapOnWordBoundary: false } : {}),
  });
  for (const row of rows) table.push(row.map((cell) => (typeof cell === "number" ? String(cell) : cell)));
  return table.toString();
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

/** 1536 → "1.5 KiB". */
export function formatBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${UNITS[unit]}`;
}

/** When a window closes (pure decisions, tested beside). */

export type RotationReason = "time" | "size" | "shutdown";

/** Beyond these a window's bookkeeping (its intent record, open spool files) would grow too large: it closes as by size. */
export const MAX_WINDOW_RUNS = 10_000;
export const MAX_WINDOW_KEYS = 1_000;

export interface WindowState {
  /** When the window's first event arrived (ms), undefined while empty. */
  openedAt: number | undefined;
  events: number;
}

/** The periodic check: a non-empty window older than the interval closes by time. */
export function rotationDue(window: WindowState, now: number, intervalMs: number): RotationReason | undefined {
  if (window.events === 0 || window.openedAt === undefined) return undefined;
  return now - window.openedAt >= intervalMs ? "time" : undefined;
}

/**
 * Before an event joins a batch: close the window first when the event would
 * take its batch past MAX_BATCH_BYTES (a batch never exceeds the limit unless
 * one event alone does), or the window's bookkeeping is at its limits.
 */
export function closeBeforeAdding(
  batch: { bytes: number; events: number } | undefined,
  eventBytes: number,
  maxBatchBytes: number,
  window: { runs: number; keys: number; newKey: boolean; extendsRun: boolean },
): boolean {
  if (batch && batch.events > 0 && batch.bytes + eventBytes > maxBatchBytes) return true;
  if (!window.extendsRun && window.runs >= MAX_WINDOW_RUNS) return true;
  return window.newKey && window.keys >= MAX_WINDOW_KEYS;
}

/** The pure bookkeeping of a chunked upload: how many chunks, how long each must be, which are missing. */

export const DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024;

export interface ChunkPlan {
  size: number;
  chunkSize: number;
}

export function totalChunks(plan: ChunkPlan): number {
  return Math.ceil(plan.size / plan.chunkSize);
}

/** The exact length chunk `n` (1-based) must have, or undefined when there is no such chunk. */
export function expectedChunkLength(plan: ChunkPlan, n: number): number | undefined {
  const total = totalChunks(plan);
  if (!Number.isSafeInteger(n) || n < 1 || n > total) return undefined;
  return n < total ? plan.chunkSize : plan.size - (total - 1) * plan.chunkSize;
}

/** Chunk numbers not yet received, ascending. */
export function missingChunks(plan: ChunkPlan, received: Iterable<number>): number[] {
  const have = new Set(received);
  const missing: number[] = [];
  for (let n = 1; n <= totalChunks(plan); n++) if (!have.has(n)) missing.push(n);
  return missing;
}

/** The file name a received chunk is kept under, and back. */
export function chunkFileName(n: number): string {
  return `chunk-${String(n).padStart(6, "0")}`;
}

export function chunkNumberOf(fileName: string): number | undefined {
  const m = /^chunk-(\d{6,})$/.exec(fileName);
  return m ? Number(m[1]) : undefined;
}

/** Has an upload whose last activity was at `lastActivityMs` been abandoned for longer than `expiryMs`? */
export function isExpired(lastActivityMs: number, nowMs: number, expiryMs: number): boolean {
  return nowMs - lastActivityMs > expiryMs;
}

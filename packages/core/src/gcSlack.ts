import { constants, PerformanceObserver } from "node:perf_hooks";
import { getHeapStatistics, setFlagsFromString } from "node:v8";

/**
 * A floor under the room V8 leaves between a small live heap and its next
 * full collection. Moving files allocates a new ArrayBuffer per chunk (socket
 * reads, NATS messages, file reads) that stays alive across a few turns, so
 * it is promoted and counts against the old generation's limit; with the
 * services' small live heaps (15–20 MB) V8 sets that limit only ~10–16 MB
 * above them and runs a full mark-compact every 60–130 ms of a large-file
 * transfer (~100 per GiB per process, ~30 % of the consumer's CPU). With at
 * least MIN_SLACK_BYTES of room the same transfer takes about a quarter less
 * CPU at the same peak RSS (docs/benchmarks.md). A process holding more
 * (a consumer remembering a million files: its records live in typed arrays,
 * outside the JavaScript heap) keeps V8's own heuristic, so its memory bound
 * stays what it was.
 */

const MiB = 1024 * 1024;
/** Room wanted between the live heap and the next full collection. */
export const MIN_SLACK_BYTES = 64 * MiB;
/** V8's own largest growing factor is 4 (300 %): never beyond it. */
const MAX_PERCENT = 300;
/** Percent steps: the flag is rewritten only when the wanted value moves by a step. */
const STEP_PERCENT = 25;

/**
 * The `--heap-growing-percent` for `liveBytes` held after a full collection
 * (the JavaScript heap plus ArrayBuffers and other external memory): enough
 * for MIN_SLACK_BYTES of room (at most 300 %), or 0 (V8's own dynamic
 * factor) once that is itself at least MIN_SLACK_BYTES.
 */
export function heapGrowingPercent(liveBytes: number, minSlackBytes = MIN_SLACK_BYTES): number {
  if (liveBytes >= minSlackBytes) return 0;
  if (liveBytes <= 0) return MAX_PERCENT;
  const wanted = Math.ceil((minSlackBytes / liveBytes) * 100);
  return Math.min(MAX_PERCENT, Math.ceil(wanted / STEP_PERCENT) * STEP_PERCENT);
}

function heldNow(): number {
  const h = getHeapStatistics();
  return h.used_heap_size + h.external_memory;
}

/**
 * Sets the growing percent for the live heap now, and again after every full
 * collection (V8 reads the flag each time it computes a new limit). Returns
 * a function that stops observing.
 */
export function installGcSlackFloor(): () => void {
  let current = -1;
  const apply = () => {
    const percent = heapGrowingPercent(heldNow());
    if (percent === current) return;
    current = percent;
    setFlagsFromString(`--heap-growing-percent=${percent}`);
  };
  apply();
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const { detail } = entry as { detail?: { kind?: number } };
      if (detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) {
        apply();
        return;
      }
    }
  });
  observer.observe({ entryTypes: ["gc"] });
  return () => observer.disconnect();
}

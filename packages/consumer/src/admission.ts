/**
 * How many files the consumer works on at once, and in which order: pure
 * decisions of the working window (discovery pauses when it is full) and of
 * the fair share of the workers between fresh files and a backlog.
 */

export interface WindowLimits {
  /** Files in progress (waiting, ready, active, in backoff) that a walk may bring in. */
  window: number;
  /** Extra room for files announced by file-system events, so a backlog cannot shut them out. */
  eventShare: number;
  /** A paused walk resumes once the files in progress fall to this many. */
  resumeAt: number;
}

/**
 * The limits of a window of `files` (DISCOVERY_WINDOW): events get a quarter
 * more room, and a paused walk resumes once an eighth has drained (not after
 * every single file: each resume reads a step of entries).
 */
export function windowLimits(files: number): WindowLimits {
  const window = Math.max(1, Math.floor(files));
  return {
    window,
    eventShare: Math.max(16, Math.floor(window / 4)),
    resumeAt: window - Math.max(1, Math.floor(window / 8)),
  };
}

/**
 * Defaults: 8,192 files in progress is ~4 MB of records, and more than a
 * stability period's worth of files at the rates one consumer reaches
 * (~2,000 files/s × STABILITY_MS 2 s), so the window never starves the workers.
 */
export const DEFAULT_WINDOW: WindowLimits = windowLimits(8192);

/** May a newly found file become a tracked file now? Otherwise the walk pauses (or the event is left to it). */
export function mayAdmit(inProgress: number, from: "walk" | "event", limits: WindowLimits): boolean {
  return inProgress < limits.window + (from === "event" ? limits.eventShare : 0);
}

/** Should a paused walk resume? */
export function mayResume(inProgress: number, limits: WindowLimits): boolean {
  return inProgress <= limits.resumeAt;
}

/** Fresh files taken in a row before a waiting backlog file gets its turn. */
export const FRESH_BURST = 3;

/**
 * Which ready queue a worker takes from: fresh files (announced by events,
 * usually few) first, so a file dropped into a quiet directory is not stuck
 * behind a backlog of thousands; but never more than `burst` in a row while
 * backlog files wait, so a stream of fresh files cannot starve the backlog.
 */
export function pickReadyQueue(
  fresh: number,
  backlog: number,
  freshInARow: number,
  burst = FRESH_BURST,
): "fresh" | "backlog" | undefined {
  if (fresh === 0) return backlog > 0 ? "backlog" : undefined;
  if (backlog === 0) return "fresh";
  return freshInARow >= burst ? "backlog" : "fresh";
}

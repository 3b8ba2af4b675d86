/** Upload job records and their state transitions: pure functions, persisted by JobStore. */

export type JobState = "PENDING" | "IN_PROGRESS" | "COMPLETED" | "FAILED";
export type JobFileState = "PENDING" | "COMPLETED" | "FAILED";

export interface JobRecord {
  upload_id: string;
  state: JobState;
  source_folder: string;
  destination_bucket: string | null;
  pattern: string;
  /** ce-source of the published files: the creating key's source. */
  source: string;
  /** The creating key's name. */
  key: string;
  /** The folder has been listed and every file recorded (total_files is final). */
  enumerated: boolean;
  total_files: number;
  completed_files: number;
  failed_files: number;
  error: string | null;
  created_at: string;
  updated_at: string;
}

export interface JobFile {
  /** Relative to source_folder, '/'-separated: the ce-subject. */
  path: string;
  /** Deterministic ce-id (job + path), so a republish after a crash is a duplicate JetStream drops. */
  file_id: string;
  state: JobFileState;
  size: number | null;
  error: string | null;
}

export type JobEvent =
  | { type: "enumerated"; total: number }
  | { type: "counts"; completed: number; failed: number }
  | { type: "fail"; error: string };

export function newJob(fields: {
  upload_id: string;
  source_folder: string;
  destination_bucket: string | null;
  pattern: string;
  source: string;
  key: string;
  now: Date;
}): JobRecord {
  const at = fields.now.toISOString();
  return {
    upload_id: fields.upload_id,
    state: "PENDING",
    source_folder: fields.source_folder,
    destination_bucket: fields.destination_bucket,
    pattern: fields.pattern,
    source: fields.source,
    key: fields.key,
    enumerated: false,
    total_files: 0,
    completed_files: 0,
    failed_files: 0,
    error: null,
    created_at: at,
    updated_at: at,
  };
}

export function isTerminal(state: JobState): boolean {
  return state === "COMPLETED" || state === "FAILED";
}

/**
 * The job after `event`. Listing the folder moves PENDING to IN_PROGRESS;
 * counts that cover every file end it, COMPLETED when none failed, FAILED
 * otherwise; `fail` ends it at once (the folder cannot be read). A finished
 * job never changes again.
 */
export function applyJobEvent(job: JobRecord, event: JobEvent, now: Date): JobRecord {
  if (isTerminal(job.state)) return job;
  const at = now.toISOString();
  switch (event.type) {
    case "enumerated": {
      const next = {
        ...job,
        enumerated: true,
        total_files: event.total,
        state: "IN_PROGRESS" as const,
        updated_at: at,
      };
      return settle(next);
    }
    case "counts": {
      const next = { ...job, completed_files: event.completed, failed_files: event.failed, updated_at: at };
      return job.enumerated ? settle(next) : next;
    }
    case "fail":
      return { ...job, state: "FAILED", error: event.error, updated_at: at };
  }
}

function settle(job: JobRecord): JobRecord {
  if (job.completed_files + job.failed_files < job.total_files) return job;
  return {
    ...job,
    state: job.failed_files === 0 ? "COMPLETED" : "FAILED",
    error: job.failed_files === 0 ? null : `${job.failed_files} of ${job.total_files} file(s) failed`,
  };
}

/** Share of files done (completed or failed), 0 to 1. */
export function jobProgress(job: JobRecord): number {
  if (job.total_files === 0) return isTerminal(job.state) ? 1 : 0;
  return Math.min(1, (job.completed_files + job.failed_files) / job.total_files);
}

/** The job as the API shows it (without the internal bookkeeping fields). */
export function jobView(job: JobRecord) {
  return {
    upload_id: job.upload_id,
    state: job.state,
    source_folder: job.source_folder,
    destination_bucket: job.destination_bucket,
    pattern: job.pattern,
    progress: jobProgress(job),
    total_files: job.total_files,
    completed_files: job.completed_files,
    failed_files: job.failed_files,
    error: job.error,
    created_at: job.created_at,
    updated_at: job.updated_at,
  };
}

import { createReadStream } from "node:fs";
import { lstat } from "node:fs/promises";
import { join } from "node:path";
import { createSemaphore, describeError, fileVersionId, isFilerelayError, type Logger } from "@filerelay/core/internal";
import type { Principal } from "../apiKeys.js";
import type { GatewayConfig } from "../config.js";
import { HttpError } from "../httpError.js";
import type { Publisher } from "../publisher.js";
import { listJobFiles, resolveJobFolder } from "./jobFolder.js";
import { applyJobEvent, isTerminal, newJob, type JobEvent, type JobFile, type JobRecord } from "./jobState.js";
import type { JobStore } from "./jobStore.js";

/** Attempts per file before it is recorded FAILED (transient broker trouble is retried). */
const FILE_ATTEMPTS = 3;
/** The job record is rewritten at most this often while files complete (and always at the end). */
const JOB_WRITE_INTERVAL_MS = 500;

export interface JobRequest {
  upload_id?: string | undefined;
  source_folder: string;
  destination_bucket?: string | undefined;
  pattern?: string | undefined;
}

/**
 * Runs upload jobs: checks the folder against GATEWAY_JOB_ROOTS, records
 * every matching file in the job store, then publishes them JOB_CONCURRENCY
 * at a time with a ce-id derived from job and path, marking each file once
 * its PubAck is in. A gateway that dies mid-job resumes it at start: files
 * already marked are skipped, and one published but not yet marked gets the
 * same ce-id again, which JetStream drops as a duplicate.
 */
export class JobRunner {
  readonly #store: JobStore;
  readonly #publisher: Publisher;
  readonly #config: GatewayConfig;
  readonly #log: Logger;
  readonly #running = new Map<string, Promise<void>>();
  readonly #stop = new AbortController();

  constructor(deps: { store: JobStore; publisher: Publisher; config: GatewayConfig; log: Logger }) {
    this.#store = deps.store;
    this.#publisher = deps.publisher;
    this.#config = deps.config;
    this.#log = deps.log.child({ component: "jobs" });
  }

  /** Validates and records a job, then runs it in the background. An existing upload_id returns that job. */
  async create(request: JobRequest, principal: Principal): Promise<{ job: JobRecord; created: boolean }> {
    const folder = await resolveJobFolder(this.#config.GATEWAY_JOB_ROOTS, request.source_folder);
    const job = newJob({
      upload_id: request.upload_id ?? crypto.randomUUID(),
      source_folder: folder,
      destination_bucket: request.destination_bucket ?? null,
      pattern: request.pattern ?? "**/*",
      source: principal.source,
      key: principal.name,
      now: new Date(),
    });
    const stored = await this.#store.createJob(job);
    if (stored.created) this.#start(stored.job);
    return stored;
  }

  /** Resumes every job a previous run left unfinished. */
  async resumeAll(): Promise<number> {
    const open = (await this.#store.listJobs()).filter((j) => !isTerminal(j.state));
    for (const job of open) this.#start(job);
    if (open.length > 0) this.#log.info({ jobs: open.map((j) => j.upload_id) }, "resuming upload jobs");
    return open.length;
  }

  /** Stops taking files; jobs in progress stay IN_PROGRESS and resume at the next start. */
  async close(): Promise<void> {
    this.#stop.abort();
    await Promise.allSettled(this.#running.values());
  }

  #start(job: JobRecord): void {
    if (this.#running.has(job.upload_id)) return;
    const run = this.#run(job)
      .catch((err: unknown) => {
        if (this.#stop.signal.aborted) return;
        this.#log.error(
          { job: job.upload_id, err: describeError(err) },
          "upload job stopped; resumes at the next start",
        );
      })
      .finally(() => this.#running.delete(job.upload_id));
    this.#running.set(job.upload_id, run);
  }

  async #run(initial: JobRecord): Promise<void> {
    let job = initial;
    const update = async (event: JobEvent) => {
      job = applyJobEvent(job, event, new Date());
      await this.#store.putJob(job);
    };
    if (!job.enumerated) {
      let paths: string[];
      try {
        // Checked again: the roots may have changed since the job was accepted.
        const folder = await resolveJobFolder(this.#config.GATEWAY_JOB_ROOTS, job.source_folder);
        paths = await listJobFiles(folder, job.pattern);
      } catch (err) {
        await update({ type: "fail", error: describeError(err) });
        return;
      }
      for (const path of paths) {
        if (this.#stop.signal.aborted) return;
        await this.#store.addFile(job.upload_id, {
          path,
          file_id: jobFileId(job.upload_id, path),
          state: "PENDING",
          size: null,
          error: null,
        });
      }
      const recorded = await this.#store.listFiles(job.upload_id);
      await update({ type: "enumerated", total: recorded.length });
      this.#log.info({ job: job.upload_id, files: recorded.length, folder: job.source_folder }, "upload job started");
    }

    const files = await this.#store.listFiles(job.upload_id);
    let completed = files.filter((f) => f.state === "COMPLETED").length;
    let failed = files.filter((f) => f.state === "FAILED").length;
    let lastWrite = 0;
    const report = async (force: boolean) => {
      if (!force && Date.now() - lastWrite < JOB_WRITE_INTERVAL_MS) return;
      lastWrite = Date.now();
      await update({ type: "counts", completed, failed });
    };
    await report(true);

    const slots = createSemaphore(this.#config.JOB_CONCURRENCY);
    const work: Promise<void>[] = [];
    for (const file of files) {
      if (file.state !== "PENDING") continue;
      if (this.#stop.signal.aborted) break;
      const release = await slots.acquire();
      work.push(
        (async () => {
          try {
            const done = await this.#publishFile(job, file);
            if (this.#stop.signal.aborted && done.state === "PENDING") return;
            await this.#store.putFile(job.upload_id, done);
            if (done.state === "COMPLETED") completed++;
            else failed++;
            await report(false);
          } finally {
            release();
          }
        })(),
      );
    }
    await Promise.all(work);
    if (this.#stop.signal.aborted) {
      await report(true).catch(() => undefined);
      return;
    }
    await report(true);
    this.#log.info(
      { job: job.upload_id, state: job.state, completed: job.completed_files, failed: job.failed_files },
      "upload job finished",
    );
  }

  /** Publishes one file of the job; the returned record says how it went (PENDING: interrupted by shutdown). */
  async #publishFile(job: JobRecord, file: JobFile): Promise<JobFile> {
    const path = join(job.source_folder, file.path);
    let lastError: unknown;
    for (let attempt = 1; attempt <= FILE_ATTEMPTS; attempt++) {
      if (this.#stop.signal.aborted) return file;
      try {
        // Never through a symlink: one swapped in since the listing could point anywhere.
        const s = await lstat(path);
        if (!s.isFile()) throw new HttpError(403, "SYMLINK_REFUSED", `${file.path} is no longer a regular file`);
        this.#publisher.checkSize(s.size);
        const result = await this.#publisher.publish(
          createReadStream(path, { highWaterMark: 256 * 1024 }),
          {
            id: file.file_id,
            source: job.source,
            subject: file.path,
            mtime: s.mtime,
            extensions: {
              jobid: job.upload_id,
              ...(job.destination_bucket ? { destination: job.destination_bucket } : {}),
            },
          },
          { api: "job", expectedSize: s.size, signal: this.#stop.signal },
        );
        return { ...file, state: "COMPLETED", size: result.size, error: null };
      } catch (err) {
        lastError = err;
        if (this.#stop.signal.aborted) return file;
        const permanent = isFilerelayError(err) ? err.permanent : (err as NodeJS.ErrnoException).code === "ENOENT";
        if (permanent) break;
        await new Promise((r) => setTimeout(r, 500 * attempt));
      }
    }
    this.#log.warn({ job: job.upload_id, path: file.path, err: describeError(lastError) }, "job file failed");
    return { ...file, state: "FAILED", error: describeError(lastError) };
  }
}

/** The ce-id of a job's file: the same for the same job and path, whichever run publishes it. */
export function jobFileId(jobId: string, path: string): string {
  return fileVersionId(`job:${jobId}:${path}`);
}

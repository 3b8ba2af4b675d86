import { describe, expect, it } from "vitest";
import { applyJobEvent, jobProgress, newJob, type JobRecord } from "./jobState.js";

const t0 = new Date("2026-12-01T10:00:00Z");
const t1 = new Date("2026-12-01T10:00:05Z");
const fresh = (): JobRecord =>
  newJob({
    upload_id: "j1",
    source_folder: "/data/x",
    destination_bucket: null,
    pattern: "**/*",
    source: "ci",
    key: "ci",
    now: t0,
  });

describe("upload job state", () => {
  it("PENDING → IN_PROGRESS on listing → COMPLETED when every file is done", () => {
    let job = fresh();
    expect(job.state).toBe("PENDING");
    job = applyJobEvent(job, { type: "enumerated", total: 3 }, t1);
    expect(job).toMatchObject({ state: "IN_PROGRESS", total_files: 3, enumerated: true, updated_at: t1.toISOString() });
    job = applyJobEvent(job, { type: "counts", completed: 2, failed: 0 }, t1);
    expect(job.state).toBe("IN_PROGRESS");
    expect(jobProgress(job)).toBeCloseTo(2 / 3);
    job = applyJobEvent(job, { type: "counts", completed: 3, failed: 0 }, t1);
    expect(job).toMatchObject({ state: "COMPLETED", completed_files: 3, error: null });
    expect(jobProgress(job)).toBe(1);
  });

  it("ends FAILED when any file failed, with the counts", () => {
    let job = applyJobEvent(fresh(), { type: "enumerated", total: 2 }, t1);
    job = applyJobEvent(job, { type: "counts", completed: 1, failed: 1 }, t1);
    expect(job).toMatchObject({ state: "FAILED", completed_files: 1, failed_files: 1 });
    expect(job.error).toMatch(/1 of 2/);
  });

  it("an empty folder completes at once", () => {
    const job = applyJobEvent(fresh(), { type: "enumerated", total: 0 }, t1);
    expect(job.state).toBe("COMPLETED");
    expect(jobProgress(job)).toBe(1);
  });

  it("counts before the listing finished never end the job", () => {
    const job = applyJobEvent(fresh(), { type: "counts", completed: 0, failed: 0 }, t1);
    expect(job.state).toBe("PENDING");
  });

  it("fail ends it; a finished job never changes again", () => {
    const failed = applyJobEvent(fresh(), { type: "fail", error: "gone" }, t1);
    expect(failed).toMatchObject({ state: "FAILED", error: "gone" });
    expect(applyJobEvent(failed, { type: "enumerated", total: 5 }, t1)).toBe(failed);
    const done = applyJobEvent(fresh(), { type: "enumerated", total: 0 }, t1);
    expect(applyJobEvent(done, { type: "fail", error: "late" }, t1)).toBe(done);
  });
});

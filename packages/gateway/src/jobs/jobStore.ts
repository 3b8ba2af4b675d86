import { createHash } from "node:crypto";
import { StorageType, type JetStreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { kvStreamName, type NatsConnection } from "@filerelay/core/internal";
import type { JobFile, JobRecord } from "./jobState.js";

/** The KV bucket of upload jobs, named from STREAM like every other JetStream object. */
export function jobBucketName(stream: string): string {
  return `${stream}_jobs`;
}

const jobKey = (id: string) => `job.${id}`;
/** One key per file: the path is hashed, as KV keys allow only a few characters. */
const fileKey = (id: string, path: string) => `file.${id}.${createHash("sha1").update(path).digest("hex")}`;

/**
 * Upload jobs in a JetStream KV bucket (replicated with the broker, no other
 * database): one entry per job and one per file of it, so a restarted
 * gateway knows exactly which files are still to publish.
 */
export class JobStore {
  readonly #kv: KV;

  private constructor(kv: KV) {
    this.#kv = kv;
  }

  static async open(
    nc: NatsConnection,
    jsm: JetStreamManager,
    options: { stream: string; replicas: number; maxAgeMs: number },
  ): Promise<JobStore> {
    const bucket = jobBucketName(options.stream);
    const kvm = new Kvm(nc);
    const exists = await jsm.streams
      .info(kvStreamName(bucket))
      .then(() => true)
      .catch(() => false);
    const kv = exists
      ? await kvm.open(bucket)
      : await kvm.create(bucket, {
          history: 1,
          storage: StorageType.File,
          replicas: options.replicas,
          ttl: options.maxAgeMs,
          description: "filerelay gateway: upload jobs and the state of each of their files",
        });
    return new JobStore(kv);
  }

  async getJob(id: string): Promise<JobRecord | undefined> {
    const e = await this.#kv.get(jobKey(id));
    return e && e.operation === "PUT" ? e.json<JobRecord>() : undefined;
  }

  async putJob(job: JobRecord): Promise<void> {
    await this.#kv.put(jobKey(job.upload_id), JSON.stringify(job));
  }

  /** Creates the job unless one with its id exists; returns the stored one either way. */
  async createJob(job: JobRecord): Promise<{ job: JobRecord; created: boolean }> {
    try {
      await this.#kv.create(jobKey(job.upload_id), JSON.stringify(job));
      return { job, created: true };
    } catch (err) {
      const existing = await this.getJob(job.upload_id);
      if (existing) return { job: existing, created: false };
      throw err;
    }
  }

  async listJobs(): Promise<JobRecord[]> {
    const jobs: JobRecord[] = [];
    for await (const key of await this.#kv.keys("job.*")) {
      const job = await this.getJob(key.slice("job.".length));
      if (job) jobs.push(job);
    }
    return jobs.sort((a, b) => b.created_at.localeCompare(a.created_at));
  }

  /** Records a file as PENDING unless it is recorded already (a listing redone after a crash). */
  async addFile(id: string, file: JobFile): Promise<void> {
    try {
      await this.#kv.create(fileKey(id, file.path), JSON.stringify(file));
    } catch (err) {
      if (!(await this.#kv.get(fileKey(id, file.path)))) throw err;
    }
  }

  async putFile(id: string, file: JobFile): Promise<void> {
    await this.#kv.put(fileKey(id, file.path), JSON.stringify(file));
  }

  async listFiles(id: string): Promise<JobFile[]> {
    const files: JobFile[] = [];
    const keys: string[] = [];
    for await (const key of await this.#kv.keys(`file.${id}.*`)) keys.push(key);
    for (let i = 0; i < keys.length; i += 64) {
      const batch = await Promise.all(keys.slice(i, i + 64).map((k) => this.#kv.get(k)));
      for (const e of batch) if (e && e.operation === "PUT") files.push(e.json<JobFile>());
    }
    return files.sort((a, b) => a.path.localeCompare(b.path));
  }
}

import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { s3sdk, startNats, startS3, startService, waitFor } from "./support/index.js";
import { fileSha, listFiles, outcomeLines, producerEnv, sha256 } from "./producer-support.js";
import { auth, KEYS, startGateway, writeKeysFile } from "./gateway-support.js";

// Upload jobs against the built gateway: a server-side folder published as one job, resumed after SIGKILL.

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "gateway-jobs-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

interface Job {
  upload_id: string;
  state: string;
  progress: number;
  total_files: number;
  completed_files: number;
  failed_files: number;
}

const json = { "content-type": "application/json" };

describe("gateway: upload jobs", () => {
  it("500 files, gateway SIGKILLed half-way: after restart the job COMPLETES and every file lands exactly once", async () => {
    await using nats = await startNats();
    const jobRoot = join(root, "exports");
    const folder = join(jobRoot, "batch-1");
    const expected = new Map<string, string>();
    for (let i = 0; i < 500; i++) {
      const rel = `${i % 5 === 0 ? "sub/" : ""}f-${String(i).padStart(3, "0")}.bin`;
      const content = Buffer.concat([Buffer.from(`${rel}\n`), randomBytes(2000 + ((i * 97) % 30_000))]);
      await mkdir(dirname(join(folder, rel)), { recursive: true });
      await writeFile(join(folder, rel), content);
      expected.set(sha256(content), rel);
    }
    await writeFile(join(folder, "skip.tmp"), "not matched by the pattern");
    const env = {
      NATS_URL: nats.url,
      GATEWAY_API_KEYS_FILE: await writeKeysFile(root),
      GATEWAY_UPLOAD_DIR: join(root, "uploads"),
      GATEWAY_JOB_ROOTS: jobRoot,
      JOB_CONCURRENCY: "2",
      LOG_LEVEL: "info",
    };
    let gw = await startGateway(env);
    const out = join(root, "out");
    await using producer = startService(
      "producer",
      producerEnv(nats.url, { OUTPUT_DIR: out, ORGANIZE_BY: "none", LOG_LEVEL: "info" }),
    );

    const created = await fetch(`${gw.url}/api/v1/uploads/`, {
      method: "POST",
      headers: { ...auth(KEYS.upload), ...json },
      body: JSON.stringify({ upload_id: "nightly-1", source_folder: folder, pattern: "**/*.bin" }),
    });
    expect(created.status, await created.clone().text()).toBe(201);
    expect(await created.json()).toMatchObject({ upload_id: "nightly-1" });
    const get = async (url: string) =>
      (await (await fetch(`${url}/api/v1/uploads/nightly-1`, { headers: auth(KEYS.read) })).json()) as Job;

    const half = await waitFor(
      async () => {
        const j = await get(gw.url);
        return j.completed_files >= 100 ? j : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 20, message: "the job half-way" },
    );
    expect(half.state).toBe("IN_PROGRESS");
    expect(half.total_files).toBe(500);
    await gw.kill();
    const atKill = await get(gw.url).catch(() => undefined);
    expect(atKill, "the gateway is gone").toBeUndefined();
    console.log(`upload job: gateway SIGKILLed with ${half.completed_files}/500 files recorded complete`);
    expect(half.completed_files, "killed before the end").toBeLessThan(500);

    gw = await startGateway(env, gw.port);
    const done = await waitFor(
      async () => {
        const j = await get(gw.url);
        return j.state === "COMPLETED" || j.state === "FAILED" ? j : undefined;
      },
      { timeoutMs: 120_000, message: "the job finished" },
    );
    expect(done).toMatchObject({
      state: "COMPLETED",
      total_files: 500,
      completed_files: 500,
      failed_files: 0,
      progress: 1,
    });
    // The same upload_id again: the existing job, not a second run.
    const again = await fetch(`${gw.url}/api/v1/uploads/`, {
      method: "POST",
      headers: { ...auth(KEYS.upload), ...json },
      body: JSON.stringify({ upload_id: "nightly-1", source_folder: folder }),
    });
    expect(again.status).toBe(200);

    await waitFor(() => outcomeLines(producer).length >= 500, { timeoutMs: 120_000, message: "500 files written" });
    const written = await listFiles(out);
    expect(written).toHaveLength(500);
    const seen = new Set<string>();
    for (const p of written) seen.add(await fileSha(join(out, p)));
    expect(seen).toEqual(new Set(expected.keys()));
    const lines = outcomeLines(producer);
    expect(lines).toHaveLength(500);
    expect(new Set(lines.map((l) => l.fileId)).size).toBe(500);
    expect(new Set(lines.map((l) => l.path))).toEqual(new Set(expected.values()));

    const files = (await (
      await fetch(`${gw.url}/api/v1/uploads/nightly-1/files`, { headers: auth(KEYS.read) })
    ).json()) as { files: { state: string }[] };
    expect(files.files).toHaveLength(500);
    expect(files.files.every((f) => f.state === "COMPLETED")).toBe(true);
    const list = (await (await fetch(`${gw.url}/api/v1/uploads/`, { headers: auth(KEYS.read) })).json()) as {
      uploads: Job[];
    };
    expect(list.uploads.map((u) => u.upload_id)).toEqual(["nightly-1"]);
    // The status ledger knows the job's files by ce-jobid.
    const byJob = (await (
      await fetch(`${gw.url}/api/v1/files?job=nightly-1&limit=1000`, { headers: auth(KEYS.read) })
    ).json()) as { files: { jobId: string }[] };
    expect(byJob.files).toHaveLength(500);
    await gw.stop();
  }, 300_000);

  it("refuses folders outside GATEWAY_JOB_ROOTS (403), via '..' (403) or a symlink out (403); missing 404; read key 403", async () => {
    await using nats = await startNats();
    const jobRoot = join(root, "exports");
    const outside = join(root, "secrets");
    await mkdir(join(jobRoot, "ok"), { recursive: true });
    await mkdir(outside, { recursive: true });
    await writeFile(join(outside, "passwd.csv"), "root:x:0:0\n");
    await writeFile(join(jobRoot, "ok", "a.csv"), "a\n");
    await symlink(outside, join(jobRoot, "link-out"));
    await symlink(join(outside, "passwd.csv"), join(jobRoot, "ok", "linked.csv"));
    await using gw = await startGateway({
      NATS_URL: nats.url,
      GATEWAY_API_KEYS_FILE: await writeKeysFile(root),
      GATEWAY_UPLOAD_DIR: join(root, "uploads"),
      GATEWAY_JOB_ROOTS: jobRoot,
    });
    const post = (source_folder: string, key: string = KEYS.upload) =>
      fetch(`${gw.url}/api/v1/uploads/`, {
        method: "POST",
        headers: { ...auth(key), ...json },
        body: JSON.stringify({ source_folder }),
      });
    for (const [folder, status] of [
      [outside, 403],
      [`${jobRoot}/../secrets`, 403],
      [`${jobRoot}/ok/../../secrets`, 403],
      [join(jobRoot, "link-out"), 403],
      [join(jobRoot, "missing"), 404],
      ["relative/path", 400],
    ] as const) {
      const res = await post(folder);
      expect(res.status, folder).toBe(status);
      const body = (await res.json()) as { code: string };
      if (status === 403) expect(body.code).toBe("JOB_ROOT_REFUSED");
    }
    expect((await post(join(jobRoot, "ok"), KEYS.read)).status).toBe(403);

    // Inside the root: the symlinked file is not followed, only the regular one is published.
    const ok = await post(join(jobRoot, "ok"));
    expect(ok.status).toBe(201);
    const { upload_id } = (await ok.json()) as Job;
    const done = await waitFor(
      async () => {
        const j = (await (
          await fetch(`${gw.url}/api/v1/uploads/${upload_id}`, { headers: auth(KEYS.read) })
        ).json()) as Job;
        return j.state === "COMPLETED" ? j : undefined;
      },
      { timeoutMs: 30_000, message: "job completed" },
    );
    expect(done.total_files).toBe(1);
    const files = (await (
      await fetch(`${gw.url}/api/v1/uploads/${upload_id}/files`, { headers: auth(KEYS.read) })
    ).json()) as { files: { path: string }[] };
    expect(files.files.map((f) => f.path)).toEqual(["a.csv"]);
  });
});

describe("gateway: upload job destination_bucket → ce-destination → S3 sink", () => {
  it("the S3 sink honours ce-destination only for a bucket in S3_ALLOWED_BUCKETS", async () => {
    await using nats = await startNats();
    await using s3 = await startS3();
    await s3.createBucket("special");
    await s3.createBucket("forbidden");
    const jobRoot = join(root, "exports");
    for (const name of ["to-special", "to-forbidden"]) {
      await mkdir(join(jobRoot, name), { recursive: true });
      await writeFile(join(jobRoot, name, `${name}.csv`), `${name}\n`);
    }
    await using gw = await startGateway({
      NATS_URL: nats.url,
      GATEWAY_API_KEYS_FILE: await writeKeysFile(root),
      GATEWAY_UPLOAD_DIR: join(root, "uploads"),
      GATEWAY_JOB_ROOTS: jobRoot,
    });
    await using producer = startService("producer", {
      NATS_URL: nats.url,
      SINK: "s3",
      ...s3.env(),
      ORGANIZE_BY: "none",
      S3_ALLOWED_BUCKETS: "special,other",
      RETRY_BACKOFF_MS: "200",
    });
    for (const [folder, bucket] of [
      ["to-special", "special"],
      ["to-forbidden", "forbidden"],
    ]) {
      const res = await fetch(`${gw.url}/api/v1/uploads/`, {
        method: "POST",
        headers: { ...auth(KEYS.upload), ...json },
        body: JSON.stringify({ source_folder: join(jobRoot, folder!), destination_bucket: bucket }),
      });
      expect(res.status).toBe(201);
    }
    await waitFor(() => outcomeLines(producer).length >= 2, { timeoutMs: 60_000, message: "2 files written" });
    const keysOf = async (bucket: string) => {
      const listed = await s3.client().send(new s3sdk.ListObjectsV2Command({ Bucket: bucket }));
      return (listed.Contents ?? []).map((o) => o.Key ?? "");
    };
    expect((await keysOf("special")).some((k) => k.endsWith(".csv"))).toBe(true);
    expect(await keysOf("forbidden")).toEqual([]);
    // Not allowed: written to S3_BUCKET instead, and said so in the log.
    expect((await s3.listKeys()).length).toBe(1);
    expect(producer.logs().some((l) => l.destination === "forbidden")).toBe(true);
    const locations = outcomeLines(producer).map((l) => String(l.location));
    expect(locations.some((l) => l.startsWith("s3://special/"))).toBe(true);
    expect(locations.some((l) => l.startsWith(`s3://${s3.bucket}/`))).toBe(true);
  });
});

import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Kvm } from "@nats-io/kv";
import { describe, expect, it } from "vitest";
import { parseEnvelope } from "@filerelay/core";
import { startNats, waitFor } from "./support/index.js";
import {
  consumerEnv,
  consumerStarted,
  listFiles,
  makeConsumerDirs,
  openStreamReader,
  outcomes,
  sha256,
  startConsumer,
  todayUtc,
  writeRel,
} from "./consumer-support.js";

// Services run from packages/*/dist: `pnpm build` first (pnpm test does).

const OUTAGE_MS = 20_000;

describe("consumer service: failures", () => {
  it(
    "broker stopped before files arrive and restarted 20 s later: every file is published after reconnect, none lands in ERROR_DIR",
    { timeout: 120_000 },
    async () => {
      await using nats = await startNats();
      if (!nats.controllable) return;
      await using dirs = await makeConsumerDirs();
      // Fast retries: were the outage counted as file failures, files would reach ERROR_DIR within 2 s.
      await using svc = startConsumer(consumerEnv(nats.url, dirs, { RETRY_BACKOFF_MS: "100", MAX_RETRIES: "3" }));
      await consumerStarted(svc);

      await nats.stop();
      const stoppedAt = Date.now();
      await svc.waitForLog((l) => l.msg === "disconnected from NATS; reconnecting", 10_000);
      const files = new Map<string, string>();
      for (let i = 0; i < 30; i++) {
        const rel = `batch/f${i}.txt`;
        files.set(rel, `payload ${i}\n`);
        await writeRel(dirs.input, rel, `payload ${i}\n`);
      }
      await svc.waitForLog(
        () => svc.logs().filter((l) => l.msg === "file detected; waiting until it is complete").length >= 30,
        10_000,
        "30 files detected",
      );
      // The outage's length is the scenario, not synchronization: keep the broker down for 20 s in all.
      await sleep(Math.max(0, stoppedAt + OUTAGE_MS - Date.now()));
      expect(await listFiles(dirs.error)).toEqual([]);
      expect(await listFiles(dirs.input)).toHaveLength(30);
      expect(outcomes(svc)).toEqual([]);

      await nats.restart();
      await using stream = await openStreamReader(nats.url);
      const msgs = await stream.waitFor(30, 60_000);
      expect(msgs.map((m) => m.headers["ce-subject"]).sort()).toEqual([...files.keys()].sort());
      for (const m of msgs) expect(Buffer.from(m.data).toString()).toBe(files.get(m.headers["ce-subject"]!));
      await svc.waitForLog(() => outcomes(svc, "published").length === 30, 20_000, "30 published");
      expect(outcomes(svc).filter((l) => l.outcome !== "published")).toEqual([]);
      expect(await listFiles(dirs.error)).toEqual([]);
      expect(await listFiles(dirs.archive)).toHaveLength(30);
      expect(await svc.stop()).toBe(0);
    },
  );

  it("PubAck failures (stream deleted) are retried with RETRY_BACKOFF_MS × 2^n, then the file goes to ERROR_DIR with a valid .error.json", async () => {
    await using nats = await startNats();
    await using dirs = await makeConsumerDirs();
    await using stream = await openStreamReader(nats.url);
    await using svc = startConsumer(consumerEnv(nats.url, dirs, { RETRY_BACKOFF_MS: "200", MAX_RETRIES: "3" }));
    await consumerStarted(svc);
    // Nothing captures files.input any more: every publish gets no PubAck.
    await stream.jsm.streams.delete("FILES");
    const content = "cannot be published\n";
    await writeRel(dirs.input, "sub/doomed.txt", content);

    const final = await svc.waitForLog((l) => l.msg === "file failed; moved to ERROR_DIR", 30_000);
    const retries = svc.logs().filter((l) => l.msg === "file attempt failed; retrying");
    expect(retries.map((l) => l.retryInMs)).toEqual([200, 400, 800]);
    expect(retries.map((l) => l.code)).toEqual(["PUBLISH_FAILED", "PUBLISH_FAILED", "PUBLISH_FAILED"]);
    expect(final).toMatchObject({ path: "sub/doomed.txt", code: "PUBLISH_FAILED", attempts: 4, outcome: "failed" });
    // Attempt k+1 starts retryInMs after attempt k failed (log times have ms resolution).
    const times = [...retries, final].map((l) => Date.parse(String(l.time)));
    for (let k = 0; k < 3; k++) {
      const gap = times[k + 1]! - times[k]!;
      expect(gap).toBeGreaterThanOrEqual(200 * 2 ** k - 2);
      expect(gap).toBeLessThan(200 * 2 ** k + 1000);
    }

    const day = todayUtc();
    expect(await listFiles(dirs.error)).toEqual([`${day}/sub/doomed.txt`, `${day}/sub/doomed.txt.error.json`]);
    expect(await readFile(join(dirs.error, day, "sub/doomed.txt"), "utf8")).toBe(content);
    const record = JSON.parse(await readFile(join(dirs.error, day, "sub/doomed.txt.error.json"), "utf8")) as Record<
      string,
      unknown
    >;
    expect(record).toMatchObject({
      path: "sub/doomed.txt",
      source: "it",
      code: "PUBLISH_FAILED",
      attempts: 4,
      size: content.length,
      fileId: final.fileId,
    });
    expect(record.reason).toMatch(/publish failed/);
    expect(record.fingerprint).toMatch(/^[0-9a-f]{64}$/);
    const first = Date.parse(String(record.firstAttemptAt));
    const last = Date.parse(String(record.lastAttemptAt));
    expect(last - first).toBeGreaterThanOrEqual(1400 - 5);
    expect(await listFiles(dirs.input)).toEqual([]);
    expect(await listFiles(dirs.archive)).toEqual([]);
  });

  it("crash (SIGKILL) after the PubAck and before archiving: on restart the file keeps its ce-id, JetStream drops the republish, and it is archived", async () => {
    await using nats = await startNats();
    await using dirs = await makeConsumerDirs();
    await using stream = await openStreamReader(nats.url);
    const env = consumerEnv(nats.url, dirs, { RETRY_BACKOFF_MS: "60000" });
    const first = startConsumer(env);
    await consumerStarted(first);
    // A regular file where ARCHIVE_DIR should be: archiving fails after the publish, and the
    // consumer sits in its (long) retry backoff: the window a crash can hit. (The consumer created
    // ARCHIVE_DIR at start; it is replaced behind its back.)
    await rm(dirs.archive, { recursive: true, force: true });
    await writeFile(dirs.archive, "not a directory");
    await writeRel(dirs.input, "a.txt", "alpha\n");
    await writeRel(dirs.input, "b.txt", "bravo\n");
    const published = await stream.waitFor(2);
    await first.waitForLog(
      () =>
        first.logs().filter((l) => l.msg === "file attempt failed; retrying" && l.code === "DISPOSE_FAILED").length ===
        2,
      10_000,
      "2 dispose failures",
    );
    await first.kill();
    expect(await listFiles(dirs.input)).toEqual(["a.txt", "b.txt"]);
    const ids = new Map(published.map((m) => [m.headers["ce-subject"], m.headers["ce-id"]]));

    // a.txt: as if the crash came before its fingerprint was recorded (the narrowest window).
    const kv = await new Kvm(stream.nc).open("FILES_fingerprints");
    let removed = 0;
    for await (const key of await kv.keys()) {
      const entry = await kv.get(key);
      if (entry?.operation === "PUT" && entry.json<{ path: string }>().path === "a.txt") {
        await kv.purge(key);
        removed++;
      }
    }
    expect(removed).toBe(1);
    await rm(dirs.archive);

    await using second = startConsumer(env);
    await second.waitForLog(() => outcomes(second).length === 2, 20_000, "2 outcomes after restart");
    const a = outcomes(second).find((l) => l.path === "a.txt")!;
    const b = outcomes(second).find((l) => l.path === "b.txt")!;
    expect(a).toMatchObject({
      msg: "file published",
      fileId: ids.get("a.txt"),
      duplicate: true,
      sha256: sha256("alpha\n"),
    });
    expect(b).toMatchObject({ msg: "file already published", fileId: ids.get("b.txt"), outcome: "skipped" });
    // JetStream's duplicate window dropped the republish: still one message per file.
    expect(await stream.count()).toBe(2);
    expect((await stream.read()).map((m) => parseEnvelope(m.headers).id).sort()).toEqual([...ids.values()].sort());
    const day = todayUtc();
    await waitFor(async () => (await listFiles(dirs.archive)).length === 2, { message: "2 archived files" });
    expect(await listFiles(dirs.archive)).toEqual([`${day}/a.txt`, `${day}/b.txt`]);
    expect(await listFiles(dirs.input)).toEqual([]);
  });
});

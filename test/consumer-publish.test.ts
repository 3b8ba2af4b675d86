import { appendFile, mkdir, open, readFile, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { parseEnvelope, readPayloadInfo } from "@filerelay/core/internal";
import { startNats } from "./support/index.js";
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

describe("consumer service: publishing", () => {
  it("publishes a file written slowly over 3 s once, complete, with the right sha256", async () => {
    await using nats = await startNats();
    await using dirs = await makeConsumerDirs();
    await using stream = await openStreamReader(nats.url);
    await using svc = startConsumer(consumerEnv(nats.url, dirs, { STABILITY_MS: "1000", POLL_INTERVAL_MS: "200" }));
    await consumerStarted(svc);

    const path = join(dirs.input, "slow.log");
    const chunks = Array.from({ length: 7 }, (_, i) => Buffer.alloc(10_000 + i, 65 + i));
    const fh = await open(path, "w");
    for (const [i, chunk] of chunks.entries()) {
      await fh.write(chunk);
      await fh.sync();
      // The writer's pace (the scenario), not synchronization: 6 pauses of 500 ms, each shorter than STABILITY_MS.
      if (i < chunks.length - 1) await sleep(500);
    }
    await fh.close();
    const whole = Buffer.concat(chunks);

    const [msg] = await stream.waitFor(1, 20_000);
    await svc.waitForLog((l) => l.msg === "file published", 10_000);
    const env = parseEnvelope(msg!.headers);
    expect(env.subject).toBe("slow.log");
    expect(env.size).toBe(whole.length);
    expect(env.sha256).toBe(sha256(whole));
    expect(Buffer.from(msg!.data).equals(whole)).toBe(true);
    // Once: no second publish of a partial or complete version.
    expect(await stream.count()).toBe(1);
    expect(outcomes(svc, "published")).toHaveLength(1);
    expect(await listFiles(dirs.archive)).toEqual([`${todayUtc()}/slow.log`]);
  });

  it("file-system events: a new file, even in a new sub-directory, is published about STABILITY_MS after it is written, not POLL_INTERVAL_MS", async () => {
    await using nats = await startNats();
    await using dirs = await makeConsumerDirs();
    await using stream = await openStreamReader(nats.url);
    await using svc = startConsumer(consumerEnv(nats.url, dirs, { STABILITY_MS: "500", POLL_INTERVAL_MS: "60000" }));
    await consumerStarted(svc);
    const latencies: number[] = [];
    for (const [i, rel] of ["top.txt", "new dir/deeper/inner.txt"].entries()) {
      const written = Date.now();
      await writeRel(dirs.input, rel, `event ${i}`);
      await stream.waitFor(i + 1, 10_000);
      latencies.push(Date.now() - written);
    }
    expect((await stream.read()).map((m) => m.headers["ce-subject"])).toEqual(["top.txt", "new dir/deeper/inner.txt"]);
    for (const ms of latencies) {
      expect(ms).toBeGreaterThanOrEqual(500);
      // Far below the 60 s poll: the stability wait plus event handling.
      expect(ms).toBeLessThan(3000);
    }
  });

  it("publishes 200 files in nested unicode/space directories exactly once with DESIGN §3 headers, and archives the tree", async () => {
    await using nats = await startNats();
    await using dirs = await makeConsumerDirs();
    await using stream = await openStreamReader(nats.url);
    await using svc = startConsumer(consumerEnv(nats.url, dirs, { CONCURRENCY: "8" }));
    await consumerStarted(svc);

    const files = new Map<string, Buffer>();
    for (let i = 0; i < 200; i++) {
      const rel = `dir ${i % 5}/süb ñ ${i % 3}/file ${i} – ü.${["txt", "csv", "json", "bin"][i % 4]}`;
      const data = Buffer.from(`content of ${rel}\n`.repeat(1 + (i % 7)));
      files.set(rel, data);
      await writeRel(dirs.input, rel, data);
    }

    const msgs = await stream.waitFor(200, 60_000);
    await svc.waitForLog(() => outcomes(svc).length >= 200, 30_000, "200 outcomes");
    expect(msgs).toHaveLength(200);
    const contentTypes: Record<string, string> = {
      txt: "text/plain",
      csv: "text/csv",
      json: "application/json",
      bin: "application/octet-stream",
    };
    const seen = new Set<string>();
    for (const m of msgs) {
      expect(m.subject).toBe("files.input");
      const h = m.headers;
      const env = parseEnvelope(h); // validates every header's form
      expect(seen.has(env.subject)).toBe(false);
      seen.add(env.subject);
      const data = files.get(env.subject);
      expect(data, env.subject).toBeDefined();
      expect(h["Nats-Msg-Id"]).toBe(h["ce-id"]);
      expect(h["ce-specversion"]).toBe("1.0");
      expect(h["ce-type"]).toBe("io.filerelay.file.v1");
      expect(h["ce-source"]).toBe("it");
      expect(h["ce-filename"]).toBe(env.subject.split("/").pop());
      expect(h["ce-filesize"]).toBe(String(data!.length));
      expect(h["ce-sha256"]).toBe(sha256(data!));
      expect(h["ce-payload"]).toBe("inline");
      expect(h["content-type"]).toBe(contentTypes[env.subject.split(".").pop()!]);
      expect(h["ce-time"]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
      expect(h["ce-mtime"]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
      expect(Buffer.from(m.data).equals(data!)).toBe(true);
    }
    expect(seen.size).toBe(200);
    expect(outcomes(svc, "published")).toHaveLength(200);

    const day = todayUtc();
    const archived = await listFiles(dirs.archive);
    expect(archived).toEqual([...files.keys()].map((rel) => `${day}/${rel}`).sort());
    for (const [rel, data] of files) expect((await readFile(join(dirs.archive, day, rel))).equals(data)).toBe(true);
    expect(await listFiles(dirs.input)).toEqual([]);
    // One outcome line per file, with the documented fields.
    for (const l of outcomes(svc, "published")) {
      expect(l).toMatchObject({ outcome: "published", attempts: 1 });
      expect(typeof l.fileId).toBe("string");
      expect(typeof l.path).toBe("string");
      expect(typeof l.size).toBe("number");
      expect(l.sha256).toMatch(/^[0-9a-f]{64}$/);
      expect(typeof l.durationMs).toBe("number");
    }
  });

  it("delete mode removes published files; nothing is archived", async () => {
    await using nats = await startNats();
    await using dirs = await makeConsumerDirs();
    await using stream = await openStreamReader(nats.url);
    await using svc = startConsumer(
      consumerEnv(nats.url, { input: dirs.input, archive: dirs.archive }, { DELETE_AFTER_PROCESSING: "true" }),
    );
    await consumerStarted(svc);
    await writeRel(dirs.input, "a.txt", "alpha");
    await writeRel(dirs.input, "sub/b.txt", "beta");
    const msgs = await stream.waitFor(2);
    expect(msgs.map((m) => m.headers["ce-subject"]).sort()).toEqual(["a.txt", "sub/b.txt"]);
    await svc.waitForLog(() => outcomes(svc, "published").length === 2, 10_000, "2 published");
    expect(outcomes(svc, "published").map((l) => l.disposition)).toEqual(["deleted", "deleted"]);
    expect(await listFiles(dirs.input)).toEqual([]);
    expect(await listFiles(dirs.archive)).toEqual([]);
  });

  it("leave-in-place mode: a restart does not publish again; a modified file is republished with a new ce-id", async () => {
    await using nats = await startNats();
    await using dirs = await makeConsumerDirs();
    await using stream = await openStreamReader(nats.url);
    const env = consumerEnv(nats.url, { input: dirs.input });
    await writeRel(dirs.input, "keep.txt", "version 1\n");
    await writeRel(dirs.input, "other.txt", "untouched\n");

    const first = startConsumer(env);
    const before = await stream.waitFor(2);
    await first.waitForLog(() => outcomes(first, "published").length === 2, 10_000, "2 published");
    expect(await first.stop()).toBe(0);

    await using second = startConsumer(env);
    // The restarted consumer looks at both files and finds them published already.
    await second.waitForLog(() => outcomes(second, "skipped").length === 2, 20_000, "2 skipped");
    expect(await stream.count()).toBe(2);
    expect(outcomes(second, "published")).toHaveLength(0);
    const ids = new Map(before.map((m) => [m.headers["ce-subject"], m.headers["ce-id"]]));
    for (const l of outcomes(second, "skipped")) expect(l.fileId).toBe(ids.get(l.path as string));

    await appendFile(join(dirs.input, "keep.txt"), "version 2\n");
    const after = await stream.waitFor(3);
    const republished = after[2]!;
    expect(republished.headers["ce-subject"]).toBe("keep.txt");
    expect(republished.headers["ce-id"]).not.toBe(ids.get("keep.txt"));
    expect(republished.headers["ce-sha256"]).toBe(sha256("version 1\nversion 2\n"));
    // Both files still where they were.
    expect(await listFiles(dirs.input)).toEqual(["keep.txt", "other.txt"]);
    expect(await second.stop()).toBe(0);
  });

  it("ready-marker mode: nothing is published until the marker appears; the marker is archived with the file", async () => {
    await using nats = await startNats();
    await using dirs = await makeConsumerDirs();
    await using stream = await openStreamReader(nats.url);
    await using svc = startConsumer(consumerEnv(nats.url, dirs, { READY_MARKER_SUFFIX: ".done" }));
    await consumerStarted(svc);

    await writeRel(dirs.input, "waiting.csv", "a,b\n");
    await writeRel(dirs.input, "first.csv", "x,y\n");
    await writeRel(dirs.input, "first.csv.done", "");
    // first.csv was written after waiting.csv: once it is through, waiting.csv had every chance.
    const [m1] = await stream.waitFor(1);
    expect(m1!.headers["ce-subject"]).toBe("first.csv");
    await svc.waitForLog((l) => l.msg === "file published" && l.path === "first.csv", 10_000);
    // And a few more full scans (POLL_INTERVAL_MS=250) with waiting.csv long stable.
    const scansBefore = svc.logs().length;
    await svc.waitForLog(
      (l) => l.msg === "file detected; waiting until it is complete" && l.path === "waiting.csv",
      10_000,
    );
    expect(scansBefore).toBeGreaterThan(0);
    expect(await stream.count()).toBe(1);
    expect(await listFiles(dirs.input)).toEqual(["waiting.csv"]);

    await writeRel(dirs.input, "waiting.csv.done", "");
    const msgs = await stream.waitFor(2);
    expect(msgs[1]!.headers["ce-subject"]).toBe("waiting.csv");
    await svc.waitForLog((l) => l.msg === "file published" && l.path === "waiting.csv", 10_000);
    const day = todayUtc();
    expect(await listFiles(dirs.archive)).toEqual(
      [`${day}/first.csv`, `${day}/first.csv.done`, `${day}/waiting.csv`, `${day}/waiting.csv.done`].sort(),
    );
    expect(await listFiles(dirs.input)).toEqual([]);
  });

  it("never publishes a symlink to a file outside INPUT_DIR, a dotfile or *.part; a file over MAX_FILE_SIZE goes straight to ERROR_DIR", async () => {
    await using nats = await startNats();
    await using dirs = await makeConsumerDirs();
    await using stream = await openStreamReader(nats.url);
    const outside = join(dirs.root, "secret.txt");
    await writeFile(outside, "top secret");
    await symlink(outside, join(dirs.input, "link-out.txt"));
    await writeRel(dirs.input, ".hidden.txt", "dot");
    await writeRel(dirs.input, ".git/config", "dot dir");
    await writeRel(dirs.input, "upload.part", "partial");
    await writeRel(dirs.input, "big.bin", Buffer.alloc(2048, 1));
    await using svc = startConsumer(consumerEnv(nats.url, dirs, { MAX_FILE_SIZE: "1KiB", MAX_RETRIES: "3" }));
    await consumerStarted(svc);
    await writeRel(dirs.input, "ok.txt", "fine");

    const [msg] = await stream.waitFor(1);
    expect(msg!.headers["ce-subject"]).toBe("ok.txt");
    const failed = await svc.waitForLog((l) => l.msg?.startsWith("file failed") === true, 10_000);
    expect(failed).toMatchObject({ path: "big.bin", code: "FILE_TOO_LARGE", attempts: 1, outcome: "failed" });
    await svc.waitForLog((l) => l.msg === "file published" && l.path === "ok.txt", 10_000);
    // Skipped entries stay untouched; the link's target was never read or moved.
    expect(await listFiles(dirs.input)).toEqual([".git/config", ".hidden.txt", "link-out.txt", "upload.part"]);
    expect(await readFile(outside, "utf8")).toBe("top secret");
    const day = todayUtc();
    expect(await listFiles(dirs.error)).toEqual([`${day}/big.bin`, `${day}/big.bin.error.json`]);
    const record = JSON.parse(await readFile(join(dirs.error, day, "big.bin.error.json"), "utf8")) as Record<
      string,
      unknown
    >;
    expect(record).toMatchObject({ path: "big.bin", code: "FILE_TOO_LARGE", attempts: 1, size: 2048 });
    expect(await stream.count()).toBe(1);
    expect(svc.logs().some((l) => l.msg === "file skipped" && l.path === "link-out.txt")).toBe(true);
  });

  it("with FOLLOW_SYMLINKS=true publishes a link inside INPUT_DIR and refuses one resolving outside (ERROR_DIR, no retries)", async () => {
    await using nats = await startNats();
    await using dirs = await makeConsumerDirs();
    await using stream = await openStreamReader(nats.url);
    const outside = join(dirs.root, "secret.txt");
    await writeFile(outside, "top secret");
    await symlink(outside, join(dirs.input, "link-out.txt"));
    await mkdir(join(dirs.input, "real"));
    await writeFile(join(dirs.input, "real", "data.txt"), "inside");
    await symlink(join(dirs.input, "real", "data.txt"), join(dirs.input, "link-in.txt"));
    await using svc = startConsumer(
      consumerEnv(nats.url, { input: dirs.input, error: dirs.error }, { FOLLOW_SYMLINKS: "true" }),
    );
    const refused = await svc.waitForLog((l) => l.msg?.startsWith("file failed") === true, 20_000);
    expect(refused).toMatchObject({ path: "link-out.txt", code: "SYMLINK_REFUSED", attempts: 1 });
    const msgs = await stream.waitFor(2);
    expect(msgs.map((m) => m.headers["ce-subject"]).sort()).toEqual(["link-in.txt", "real/data.txt"]);
    for (const m of msgs) expect(Buffer.from(m.data).toString()).toBe("inside");
    expect(await readFile(outside, "utf8")).toBe("top secret");
    expect(await listFiles(dirs.error)).toEqual([
      `${todayUtc()}/link-out.txt`,
      `${todayUtc()}/link-out.txt.error.json`,
    ]);
  });

  it("sends a file over INLINE_MAX_BYTES through the Object Store: empty body, object:<bucket>/<ce-id>", async () => {
    await using nats = await startNats();
    await using dirs = await makeConsumerDirs();
    await using stream = await openStreamReader(nats.url);
    await using svc = startConsumer(consumerEnv(nats.url, dirs, { INLINE_MAX_BYTES: "64KiB" }));
    await consumerStarted(svc);
    const data = Buffer.alloc(1_500_000);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7919) % 251;
    await writeRel(dirs.input, "large.bin", data);
    await writeRel(dirs.input, "small.txt", "tiny");
    const msgs = await stream.waitFor(2, 30_000);
    const large = msgs.find((m) => m.headers["ce-subject"] === "large.bin")!;
    const env = parseEnvelope(large.headers);
    expect(large.data.length).toBe(0);
    expect(env.payload).toEqual({ kind: "object", bucket: "FILES_payloads", name: env.id });
    expect(env.size).toBe(data.length);
    expect(env.sha256).toBe(sha256(data));
    const info = await readPayloadInfo(stream.nc, { bucket: "FILES_payloads", name: env.id });
    expect(info?.size).toBe(data.length);
    expect(info?.metadata?.["filerelay-sha256"]).toBe(sha256(data));
    const small = msgs.find((m) => m.headers["ce-subject"] === "small.txt")!;
    expect(small.headers["ce-payload"]).toBe("inline");
    await svc.waitForLog(() => outcomes(svc, "published").length === 2, 10_000, "2 published");
    expect(await listFiles(dirs.archive)).toEqual([`${todayUtc()}/large.bin`, `${todayUtc()}/small.txt`]);
  });
});

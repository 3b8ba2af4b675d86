import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { mkdir, open, readFile, rename, stat, symlink, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { startNats, waitFor, type NatsServer } from "./support/index.js";
import {
  consumerEnv,
  consumerStarted,
  listFiles,
  makeConsumerDirs,
  openStreamReader,
  sha256,
  startConsumer,
  todayUtc,
  writeRel,
} from "./consumer-support.js";

// Services run from packages/*/dist: `pnpm build` first (pnpm test does).

/** An old access time: on a relatime mount (the default) the first read of the file then updates it. */
const OLD_ATIME_S = 1_000_000;

/** Writes `data` beside `root` and renames it to `dest` (a complete file appears at once, as uploaders do). */
async function dropAt(root: string, dest: string, data: Buffer, times?: { atimeS: number; mtimeS: number }) {
  const tmp = join(root, `.drop-${randomBytes(4).toString("hex")}`);
  await writeFile(tmp, data);
  if (times) await utimes(tmp, times.atimeS, times.mtimeS);
  await rename(tmp, dest);
}

/** Pauses the broker: every request of the consumer then waits, with the file already read. */
function pauseBroker(nats: NatsServer): () => void {
  const pid = nats.pid();
  if (pid === undefined) throw new Error("the broker has no pid");
  process.kill(pid, "SIGSTOP");
  let resumed = false;
  return () => {
    if (resumed) return;
    resumed = true;
    process.kill(pid, "SIGCONT");
  };
}

describe("consumer: a file replaced while it is being published", () => {
  const cases = [
    { mode: "delete", payload: "inline", size: 10_000 },
    { mode: "delete", payload: "object", size: 3 * 1024 * 1024 },
    { mode: "archive", payload: "inline", size: 10_000 },
    { mode: "archive", payload: "object", size: 3 * 1024 * 1024 },
  ] as const;

  for (const c of cases) {
    it(`${c.mode} mode, ${c.payload} payload: both versions are published, and disposal only touches the published one`, async () => {
      await using nats = await startNats();
      await using dirs = await makeConsumerDirs();
      await using stream = await openStreamReader(nats.url);
      await using svc = startConsumer(
        consumerEnv(nats.url, dirs, {
          STABILITY_MS: "1000",
          INLINE_MAX_BYTES: "65536",
          ...(c.mode === "delete" ? { DELETE_AFTER_PROCESSING: "true" } : {}),
        }),
      );
      await consumerStarted(svc);
      const dest = join(dirs.input, "report.bin");
      const first = randomBytes(c.size);
      const second = randomBytes(Math.floor(c.size / 2) + 1);
      const mtimeS = Math.floor(Date.now() / 1000);
      await dropAt(dirs.root, dest, first, { atimeS: OLD_ATIME_S, mtimeS });

      // The broker pauses before the file is stable; the consumer then reads the
      // first version (its access time moves) and waits on the broker.
      const resume = pauseBroker(nats);
      try {
        await waitFor(async () => (await stat(dest)).atimeMs > OLD_ATIME_S * 1000, {
          timeoutMs: 15_000,
          intervalMs: 5,
          message: "the consumer to read the first version",
        });
        // A writer renames a new version over the path while the first is being published.
        await dropAt(dirs.root, dest, second);
      } finally {
        resume();
      }

      const messages = await stream.waitFor(2, 30_000).catch((err: unknown) => {
        console.log(
          svc
            .logs()
            .filter((l) => l.msg !== "scan done")
            .map((l) => JSON.stringify(l))
            .join("\n"),
        );
        throw err;
      });
      expect(messages.map((m) => m.headers["ce-sha256"])).toEqual([sha256(first), sha256(second)]);
      expect(messages[0]!.headers["ce-id"]).not.toBe(messages[1]!.headers["ce-id"]);
      await svc.waitForLog((l) => l.msg === "file published" && l.sha256 === sha256(second), 30_000);
      expect(await listFiles(dirs.input)).toEqual([]);
      if (c.mode === "archive") {
        // The first version is gone with the writer's rename; the second is archived after its own publish.
        expect(await listFiles(dirs.archive)).toEqual([`${todayUtc()}/report.bin`]);
        expect(sha256(await readFile(join(dirs.archive, todayUtc(), "report.bin")))).toBe(sha256(second));
      }
      expect(svc.logs().some((l) => l.disposition === "superseded")).toBe(true);
    });
  }
});

describe("consumer: a new version that keeps size, mtime and first 64 KiB", () => {
  for (const payload of ["inline", "object"] as const) {
    it(`delete mode, ${payload} payload: a second file with the same name, size, mtime and head is published as a new version`, async () => {
      await using nats = await startNats();
      await using dirs = await makeConsumerDirs();
      await using stream = await openStreamReader(nats.url);
      await using svc = startConsumer(
        consumerEnv(nats.url, dirs, { DELETE_AFTER_PROCESSING: "true", INLINE_MAX_BYTES: "262144" }),
      );
      await consumerStarted(svc);
      const size = payload === "inline" ? 200_000 : 1024 * 1024;
      const head = randomBytes(64 * 1024);
      const first = Buffer.concat([head, randomBytes(size - head.length)]);
      const second = Buffer.concat([head, randomBytes(size - head.length)]);
      const dest = join(dirs.input, "export.dat");
      const businessDate = 1_700_000_000; // whole seconds: both copies get the same mtime to the nanosecond
      await dropAt(dirs.root, dest, first, { atimeS: businessDate, mtimeS: businessDate });
      await stream.waitFor(1, 20_000);
      await waitFor(async () => (await listFiles(dirs.input)).length === 0, { message: "the first version deleted" });

      // Same path, size, mtime and first 64 KiB (cp -p, rsync -t, tar -x of another export).
      await dropAt(dirs.root, dest, second, { atimeS: businessDate, mtimeS: businessDate });
      expect((await stat(dest)).mtimeMs).toBe(businessDate * 1000);
      const messages = await stream.waitFor(2, 20_000);
      expect(messages.map((m) => m.headers["ce-sha256"])).toEqual([sha256(first), sha256(second)]);
      expect(new Set(messages.map((m) => m.headers["ce-id"])).size).toBe(2);
      if (payload === "object") {
        expect(messages[0]!.headers["ce-payload"]).not.toBe(messages[1]!.headers["ce-payload"]);
      }
      await waitFor(async () => (await listFiles(dirs.input)).length === 0, { message: "the second version deleted" });
      expect(svc.logs().filter((l) => l.outcome === "skipped")).toEqual([]);
    });
  }

  it("leave-in-place mode: a file rewritten in place with its mtime restored is published again", async () => {
    await using nats = await startNats();
    await using dirs = await makeConsumerDirs();
    await using stream = await openStreamReader(nats.url);
    await using svc = startConsumer(consumerEnv(nats.url, { input: dirs.input }, { POLL_INTERVAL_MS: "200" }));
    await consumerStarted(svc);
    const dest = join(dirs.input, "ledger.csv");
    const first = Buffer.concat([Buffer.alloc(70_000, "a"), Buffer.from("total=1\n")]);
    const mtimeS = 1_700_000_000; // whole seconds: restored to the nanosecond below
    await dropAt(dirs.root, dest, first, { atimeS: mtimeS, mtimeS });
    await stream.waitFor(1, 20_000);
    const before = await stat(dest, { bigint: true });

    // In place: same inode, same size, mtime put back (what cp -p does over an existing file).
    const fh = await open(dest, "r+");
    await fh.write(Buffer.from("total=2\n"), 0, 8, 70_000);
    await fh.close();
    await utimes(dest, mtimeS, mtimeS);
    const after = await stat(dest, { bigint: true });
    expect([after.ino, after.size, after.mtimeNs]).toEqual([before.ino, before.size, before.mtimeNs]);
    const second = await readFile(dest);

    const messages = await stream.waitFor(2, 20_000);
    expect(messages.map((m) => m.headers["ce-sha256"])).toEqual([sha256(first), sha256(second)]);
    expect(await listFiles(dirs.input)).toEqual(["ledger.csv"]);
  });
});

describe("consumer: INPUT_DIR reached through a symlink", () => {
  it("keeps ARCHIVE_DIR inside the real input directory out of the walk (no republishing of the archive)", async () => {
    await using nats = await startNats();
    await using dirs = await makeConsumerDirs();
    await using stream = await openStreamReader(nats.url);
    const real = join(dirs.root, "input");
    await mkdir(real);
    const link = join(dirs.root, "inlink");
    await symlink(real, link);
    await using svc = startConsumer(
      consumerEnv(nats.url, { input: link, archive: join(real, "archive") }, { POLL_INTERVAL_MS: "100" }),
    );
    await consumerStarted(svc);
    await writeRel(real, "a.txt", "hello");
    await stream.waitFor(1, 20_000);
    await waitFor(async () => (await listFiles(join(real, "archive"))).length === 1, { message: "a.txt archived" });
    // Several full polls after the archiving: none may find the archived copy.
    const scansAfter = svc.logs().filter((l) => l.msg === "scan done").length + 5;
    await svc.waitForLog(() => svc.logs().filter((l) => l.msg === "scan done").length >= scansAfter, 20_000);
    expect(await stream.count()).toBe(1);
    expect(await listFiles(join(real, "archive"))).toEqual([`${todayUtc()}/a.txt`]);
  });
});

describe("consumer: a writer that pauses longer than STABILITY_MS", () => {
  it.skipIf(!existsSync("/proc/self/fdinfo"))(
    "does not publish a file another process still holds open for writing; publishes it whole once closed",
    async () => {
      await using nats = await startNats();
      await using dirs = await makeConsumerDirs();
      await using stream = await openStreamReader(nats.url);
      await using svc = startConsumer(consumerEnv(nats.url, dirs, { STABILITY_MS: "300", POLL_INTERVAL_MS: "100" }));
      await consumerStarted(svc);
      const dest = join(dirs.input, "slow-upload.csv");
      // Writes a part each time it is told to, holding the file open in between, and closes it after the last.
      const script =
        'exec 3>"$1"; printf "id,part\\n" >&3; read -r _; printf "1,first\\n" >&3; read -r _; printf "2,second\\n" >&3; exec 3>&-';
      const writer = spawn("bash", ["-c", script, "writer", dest], { stdio: ["pipe", "ignore", "inherit"] });
      try {
        await svc.waitForLog((l) => l.msg === "file detected; waiting until it is complete", 20_000);
        // Seen growing, then quiet for longer than STABILITY_MS with the file still open.
        writer.stdin.write("more\n");
        await svc.waitForLog((l) => typeof l.msg === "string" && l.msg.includes("still open for writing"), 20_000);
        expect(await stream.count()).toBe(0);
        writer.stdin.end("last\n");
        await once(writer, "exit");
        const [msg] = await stream.waitFor(1, 20_000);
        expect(Buffer.from(msg!.data).toString()).toBe("id,part\n1,first\n2,second\n");
        expect(await stream.count()).toBe(1);
      } finally {
        writer.kill();
      }
    },
  );
});

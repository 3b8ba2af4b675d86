/**
 * Hostile and odd inputs at the consumer (issue 9 item 4). Each input is
 * either relayed correctly (through a real producer, bytes checked) or moved
 * aside / logged with a clear reason; the consumer never crashes or stalls: a
 * normal file dropped afterwards is still relayed.
 *
 * Names that are not valid UTF-8 cannot be carried in ce-subject (a UTF-8
 * string) without changing them, and Node cannot even address such a file by
 * a string path: the consumer leaves them in place and logs them once, with
 * the reason (see the test for the exact line).
 */
import { execFile, spawnSync } from "node:child_process";
import {
  chmod,
  chown,
  mkdir,
  mkdtemp,
  rename,
  readdir,
  readFile,
  rm,
  symlink,
  truncate,
  unlink,
  writeFile,
} from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from "vitest";
import {
  startNats,
  startService,
  waitFor,
  type LogLine,
  type NatsServer,
  type RunningService,
} from "./support/index.js";
import { openStreamReader } from "./consumer-support.js";
import { serviceEntry } from "./support/index.js";
import {
  consumerReady,
  producerReady,
  sha256hex,
  startServiceAs,
  treeHashes,
  waitWritten,
} from "./support/pipeline.js";

const run = promisify(execFile);

// Services run from packages/*/dist: `pnpm build` first (pnpm test does).

const counts: Record<string, number> = {};
const count = (k: string, n = 1) => (counts[k] = (counts[k] ?? 0) + n);
let root: string;
let nats: NatsServer;
const t0 = Date.now();

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "hostile-in-"));
  await chmod(root, 0o755);
  nats = await startNats();
});
afterAll(async () => {
  await nats[Symbol.asyncDispose]();
  await rm(root, { recursive: true, force: true });
  console.log(
    `hostile-inputs: ${Object.entries(counts)
      .map(([k, v]) => `${k}=${v}`)
      .join(" ")} crashes=0 (${((Date.now() - t0) / 1000).toFixed(1)}s)`,
  );
});

interface Pipeline {
  dir: string;
  input: string;
  output: string;
  archive: string;
  error: string;
}

async function makeDirs(name: string): Promise<Pipeline> {
  const dir = join(root, name);
  const p = {
    dir,
    input: join(dir, "in"),
    output: join(dir, "out"),
    archive: join(dir, "archive"),
    error: join(dir, "error"),
  };
  await mkdir(p.input, { recursive: true });
  return p;
}

function startPair(
  p: Pipeline,
  group: string,
  consumerExtra: Record<string, string> = {},
): { consumer: RunningService; producer: RunningService } {
  const consumer = startService("consumer", {
    NATS_URL: nats.url,
    INPUT_DIR: p.input,
    ARCHIVE_DIR: p.archive,
    ERROR_DIR: p.error,
    SOURCE: group,
    SUBJECT: `files.${group}`,
    SINK_GROUPS: group,
    POLL_INTERVAL_MS: "300",
    STABILITY_MS: "300",
    RETRY_BACKOFF_MS: "100",
    MAX_RETRIES: "1",
    ...consumerExtra,
  });
  const producer = startService("producer", {
    NATS_URL: nats.url,
    SUBJECT: `files.${group}`,
    PRODUCER_GROUP: group,
    OUTPUT_DIR: p.output,
    ORGANIZE_BY: "none",
    FILENAME_TEMPLATE: "{{.RelDir}}/{{.Name}}{{.Ext}}",
    CONCURRENCY: "8",
  });
  onTestFailed(() => {
    for (const svc of [consumer, producer]) {
      const lines = svc
        .logs()
        .filter((l) => l.msg !== "scan done")
        .slice(-80)
        .map((l) => JSON.stringify(l).slice(0, 400));
      console.log(`--- ${svc.name} (exit ${svc.proc.exitCode}) ---\n${lines.join("\n")}\n${svc.stderr().slice(-2000)}`);
    }
  });
  return { consumer, producer };
}

const today = () => new Date().toISOString().slice(0, 10);

/** The consumer is alive and relays a normal file dropped now. */
async function stillRelays(p: Pipeline, consumer: RunningService, producer: RunningService, already: number) {
  const content = Buffer.from(`after the storm ${Date.now()}\n`);
  // Whole when it appears: with STABILITY_MS=0 a plain writeFile's empty first
  // state (created, not yet written) is a version of its own and is published.
  await writeFile(join(p.input, ".after.txt.tmp"), content);
  await rename(join(p.input, ".after.txt.tmp"), join(p.input, "after.txt"));
  await producer.waitForLog((l) => l.msg === "file written" && l.path === "after.txt", 60_000, "after.txt written");
  void already;
  expect((await readFile(join(p.output, "after.txt"))).equals(content)).toBe(true);
  expect(consumer.proc.exitCode).toBeNull();
  expect(producer.proc.exitCode).toBeNull();
  count("still-relaying-after");
}

const errorRecord = async (p: Pipeline, rel: string) =>
  JSON.parse(await readFile(join(p.error, today(), `${rel}.error.json`), "utf8")) as Record<string, unknown>;

describe("hostile and odd inputs at the consumer", () => {
  it("relays odd names, deep paths and empty files; refuses special files, loops and bad names with a reason", async () => {
    const p = await makeDirs("odd");
    const relayed: { rel: string; content: Buffer }[] = [];
    const put = async (rel: string, content: Buffer | string) => {
      const buf = Buffer.from(content);
      await mkdir(join(p.input, ...rel.split("/").slice(0, -1)), { recursive: true });
      await writeFile(join(p.input, ...rel.split("/")), buf);
      relayed.push({ rel, content: buf });
    };
    await put("empty.txt", "");
    const deep = Array.from({ length: 40 }, (_, i) => `d${i + 1}`).join("/");
    await put(`${deep}/deep.txt`, "forty levels down\n");
    await put("100% done %2e%2e%2f.txt", "percent\n");
    await put("{{.ID}}{{.Name}} {{evil}}.txt", "braces\n");
    await put("📦 ünïcødé 🚀.txt", "emoji\n");
    await put("x.csv/inner.txt", "inside a directory named x.csv\n");
    // A name with a newline: cannot be a header value, refused before publishing (NAME_INVALID).
    await writeFile(join(p.input, "new\nline.txt"), "newline\n");
    // A name that is not valid UTF-8.
    const badBase = Buffer.concat([Buffer.from("bad-"), Buffer.from([0xff, 0xfe]), Buffer.from(".txt")]);
    const badName = Buffer.concat([Buffer.from(`${p.input}/`), badBase]);
    await writeFile(badName, "latin1 junk\n");
    // Special files: FIFO (a blocking open would hang a worker), UNIX socket, symlink loops.
    await run("mkfifo", [join(p.input, "pipe.csv")]);
    const sock: Server = createServer();
    await new Promise<void>((resolve) => sock.listen(join(p.input, "sock.csv"), resolve));
    await symlink("loop-b", join(p.input, "loop-a"));
    await symlink("loop-a", join(p.input, "loop-b"));
    await symlink(".", join(p.input, "self"));
    await symlink("..", join(p.input, "up"));

    const { consumer, producer } = startPair(p, "odd", { FOLLOW_SYMLINKS: "true" });
    await using _c = consumer;
    await using _p = producer;
    try {
      await Promise.all([consumerReady(consumer), producerReady(producer)]);
      await waitWritten(producer, relayed.length);
      // The refused ones are settled: the newline name is in ERROR_DIR, the others logged.
      const nl = await consumer.waitForLog(
        (l) => l.outcome === "failed" && String(l.path).includes("\n"),
        30_000,
        "the newline name to fail",
      );
      expect(nl.code).toBe("NAME_INVALID");
      await stillRelays(p, consumer, producer, relayed.length);

      // Relayed: exact names (no template re-expansion, no percent-decoding), exact bytes.
      const tree = await treeHashes(p.output);
      const expected = [...relayed, { rel: "after.txt", content: await readFile(join(p.output, "after.txt")) }]
        .map((r) => ({ rel: r.rel, sha256: sha256hex(r.content), size: r.content.length }))
        .sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
      expect(tree).toEqual(expected);
      count("relayed", relayed.length);

      // Newline name: ERROR_DIR with a record saying why.
      const rec = await errorRecord(p, "new\nline.txt");
      expect(rec.code).toBe("NAME_INVALID");
      expect(String(rec.reason)).toMatch(/control characters/);
      count("error-dir:NAME_INVALID");

      // Special files: skipped with a reason, left in place, never opened for reading.
      const skipped = (name: string) =>
        consumer.logs().find((l: LogLine) => l.msg === "file skipped" && l.path === name);
      for (const name of ["pipe.csv", "sock.csv"]) {
        expect(skipped(name)?.reason, name).toBe("not a regular file");
        count("skipped:not-regular");
      }
      const inputLeft = (await readdir(p.input)).sort();
      expect(inputLeft).toEqual(expect.arrayContaining(["pipe.csv", "sock.csv", "loop-a", "loop-b", "self", "up"]));
      // Loops resolve to nothing: no publish, no error entry, no crash.
      for (const name of ["loop-a", "loop-b", "self", "up"]) {
        expect(
          consumer.logs().some((l) => l.path === name && (l.outcome === "published" || l.outcome === "failed")),
          name,
        ).toBe(false);
        count("ignored:symlink-loop-or-dir");
      }
      // Not valid UTF-8: no publish under a mangled (U+FFFD) name, and the file stays, byte for byte.
      expect(
        consumer
          .logs()
          .some((l) => typeof l.path === "string" && l.path.includes("\uFFFD") && l.outcome === "published"),
      ).toBe(false);
      const names = await readdir(p.input, { encoding: "buffer" });
      expect(names.some((n) => n.equals(badBase))).toBe(true);
      // …and the operator is told once, at warn, what to do.
      const warned = consumer
        .logs()
        .filter((l) => l.level === "warn" && l.msg === "file skipped" && String(l.path).includes("\uFFFD"));
      expect(warned).toHaveLength(1);
      expect(String(warned[0]?.reason)).toMatch(/not valid UTF-8.*rename/);
      count("invalid-utf8");
    } finally {
      sock.close();
    }
  });

  it("relays 10,000 files from one directory, each once, with bounded open files", async () => {
    const p = await makeDirs("many");
    const n = Number(process.env.FILERELAY_HOSTILE_MANY ?? 10_000);
    const hashes = new Map<string, string>();
    for (let i = 0; i < n; i += 500) {
      await Promise.all(
        Array.from({ length: Math.min(500, n - i) }, (_, j) => {
          const name = `f${String(i + j).padStart(5, "0")}.dat`;
          const content = `file ${i + j}\n`;
          hashes.set(name, sha256hex(content));
          return writeFile(join(p.input, name), content);
        }),
      );
    }
    const { consumer, producer } = startPair(p, "many", {
      LOG_LEVEL: "info",
      CONCURRENCY: "16",
      DELETE_AFTER_PROCESSING: "true",
    });
    await using _c = consumer;
    await using _p = producer;
    await Promise.all([consumerReady(consumer), producerReady(producer)]);
    let maxFds = 0;
    const fdCount = async () => (await readdir(`/proc/${consumer.pid}/fd`).catch(() => [])).length;
    await waitFor(
      async () => {
        maxFds = Math.max(maxFds, await fdCount());
        return producer.logs().filter((l) => l.msg === "file written").length >= n;
      },
      { timeoutMs: 110_000, intervalMs: 250, message: `${n} files written` },
    );
    const tree = await treeHashes(p.output);
    expect(tree.length).toBe(n);
    for (const f of tree) expect(f.sha256, f.rel).toBe(hashes.get(f.rel));
    // Published once each: one "file published" line per name, none failed; the input is empty.
    const published = consumer.logs().filter((l) => l.outcome === "published");
    expect(new Set(published.map((l) => l.path)).size).toBe(n);
    expect(published.length).toBe(n);
    expect(consumer.logs().filter((l) => l.outcome === "failed")).toEqual([]);
    expect(await readdir(p.input)).toEqual([]);
    // CONCURRENCY bounds open files: never anything near one per file.
    expect(maxFds).toBeLessThan(200);
    count("many-relayed", n);
    count("many-max-consumer-fds", maxFds);
  });

  it("files deleted between listing and reading, or truncated while being read: never partial, never stuck", async () => {
    const p = await makeDirs("race");
    const { consumer, producer } = startPair(p, "race", {
      STABILITY_MS: "0",
      POLL_INTERVAL_MS: "100",
      INLINE_MAX_BYTES: "65536",
      CONCURRENCY: "4",
    });
    await using _c = consumer;
    await using _p = producer;
    await Promise.all([consumerReady(consumer), producerReady(producer)]);

    // Deletion races: files appear and are deleted at once, while the consumer lists and reads.
    const n = 300;
    const versions = new Map<string, string>();
    for (let i = 0; i < n; i++) {
      const name = `gone-${i}.bin`;
      const content = Buffer.alloc(i % 2 === 0 ? 2000 : 100_000, i % 251);
      versions.set(name, sha256hex(content));
      // Written under a dotted temp name and renamed in: a file only ever exists whole.
      const tmp = join(p.input, `.${name}.tmp`);
      await writeFile(tmp, content);
      await rename(tmp, join(p.input, name));
      // Delete some right away, others up to 20 ms later: every stage of the pipeline gets hit.
      const del = () => unlink(join(p.input, name)).catch(() => undefined);
      if (i % 3 !== 0) await del();
      else setTimeout(() => void del(), i % 20); // a hostile schedule, not a synchronization
    }
    // Truncation while reading: a large file (object payload) is cut to a fraction as soon as upload starts.
    const big = Buffer.alloc(48 * 1024 * 1024, 7);
    for (let i = 0; i < big.length; i += 4096) big.writeUInt32LE(i, i);
    const bigPath = join(p.input, "truncated.bin");
    await writeFile(join(p.input, ".truncated.bin.tmp"), big);
    await using nc = await openStreamReader(nats.url, "OBJ_FILES_payloads");
    const before = await nc.count();
    await rename(join(p.input, ".truncated.bin.tmp"), bigPath);
    // The upload has begun once chunks reach the object stream: cut the file then.
    await waitFor(async () => (await nc.count()) > before, {
      intervalMs: 5,
      timeoutMs: 30_000,
      message: "the upload of truncated.bin to start",
    });
    // Under heavy load the whole upload may already be done and the file archived: then there is nothing to cut.
    const cutInTime = await truncate(bigPath, 1024 * 1024).then(
      () => true,
      (err: NodeJS.ErrnoException) => {
        if (err.code === "ENOENT") return false;
        throw err;
      },
    );
    const cut = big.subarray(0, 1024 * 1024);

    await stillRelays(p, consumer, producer, 0);
    // Settled: the truncated file is relayed in its final version (whatever was read before it changed is discarded).
    await waitFor(
      () =>
        consumer
          .logs()
          .some(
            (l) =>
              l.outcome === "published" &&
              l.path === "truncated.bin" &&
              l.size === (cutInTime ? cut.length : big.length),
          ),
      { timeoutMs: 60_000, message: "the truncated version to be published" },
    );
    await waitFor(async () => (await readdir(p.input)).length === 0, { message: "the input to drain" });
    const finalSize = cutInTime ? cut.length : big.length;
    await producer.waitForLog(
      (l) => l.msg === "file written" && l.path === "truncated.bin" && l.size === finalSize,
      60_000,
      "the final version of truncated.bin to be written",
    );
    const tree = await treeHashes(p.output);
    const out = new Map(tree.map((f) => [f.rel, f]));
    // Every output is a whole version of its file, never a partial.
    let relayedGone = 0;
    for (const f of tree) {
      if (f.rel === "after.txt") continue;
      if (f.rel === "truncated.bin") {
        const ok = f.sha256 === sha256hex(cut) || f.sha256 === sha256hex(big);
        expect(ok, "truncated.bin is one whole version").toBe(true);
        continue;
      }
      expect(f.sha256, f.rel).toBe(versions.get(f.rel));
      relayedGone++;
    }
    expect(
      !cutInTime ||
        out.get("truncated.bin")?.size === cut.length ||
        [...out.keys()].some((k) => k.startsWith("truncated-")),
    ).toBe(true);
    const vanished = consumer.logs().filter((l) => l.outcome === "vanished").length;
    expect(consumer.logs().filter((l) => l.outcome === "failed")).toEqual([]);
    expect(await readdir(p.error).catch(() => [])).toEqual([]);
    const changed = consumer
      .logs()
      .filter((l) => l.msg === "file changed while being read; waiting until it is complete");
    count("race-deleted", n);
    count("race-relayed-before-delete", relayedGone);
    count("race-vanished-logged", vanished);
    count(cutInTime ? "truncated-relayed-final" : "truncate-too-late-whole-relayed", 1);
    count("changed-while-read", changed.length);
  });

  it("as nobody: permission-denied files go to ERROR_DIR with the reason; unreadable directories are skipped", async (ctx) => {
    const nobody = { uid: 65534, gid: 65534 };
    // The service runs as nobody only where nobody can reach node and the checkout
    // (e.g. not when Node was installed under root's 0700 home).
    const probe = spawnSync(
      process.execPath,
      ["-e", "require('fs').accessSync(process.argv[1])", serviceEntry("consumer")],
      {
        ...nobody,
        cwd: "/",
        encoding: "utf8",
      },
    );
    if (probe.status !== 0) {
      ctx.skip(
        `uid 65534 cannot run ${process.execPath} on this checkout: ${String(probe.error ?? probe.stderr).slice(0, 200)}`,
      );
    }
    const p = await makeDirs("perm");
    await chown(p.dir, nobody.uid, nobody.gid);
    await chown(p.input, nobody.uid, nobody.gid);
    await writeFile(join(p.input, "readable.txt"), "anyone may read\n");
    await chown(join(p.input, "readable.txt"), nobody.uid, nobody.gid);
    await writeFile(join(p.input, "secret.txt"), "root only\n", { mode: 0o600 });
    await chmod(join(p.input, "secret.txt"), 0o600);
    await mkdir(join(p.input, "locked"), { mode: 0o700 });
    await chmod(join(p.input, "locked"), 0o700);
    await writeFile(join(p.input, "locked", "hidden.txt"), "behind a locked door\n");

    const consumer = startServiceAs(
      "consumer",
      {
        NATS_URL: nats.url,
        INPUT_DIR: p.input,
        ARCHIVE_DIR: p.archive,
        ERROR_DIR: p.error,
        SOURCE: "perm",
        SUBJECT: "files.perm",
        SINK_GROUPS: "perm",
        POLL_INTERVAL_MS: "300",
        STABILITY_MS: "300",
        RETRY_BACKOFF_MS: "100",
        MAX_RETRIES: "2",
      },
      nobody,
    );
    const producer = startService("producer", {
      NATS_URL: nats.url,
      SUBJECT: "files.perm",
      PRODUCER_GROUP: "perm",
      OUTPUT_DIR: p.output,
      ORGANIZE_BY: "none",
      FILENAME_TEMPLATE: "{{.RelDir}}/{{.Name}}{{.Ext}}",
    });
    await using _c = consumer;
    await using _p = producer;
    await Promise.all([consumerReady(consumer), producerReady(producer)]);
    const failed = await consumer.waitForLog(
      (l) => l.outcome === "failed" && l.path === "secret.txt",
      30_000,
      "secret.txt to fail",
    );
    expect(failed.code).toBe("FILE_READ_FAILED");
    expect(failed.attempts).toBe(3);
    expect(String(failed.reason)).toMatch(/EACCES|permission denied/i);
    const rec = await errorRecord(p, "secret.txt");
    expect(rec.code).toBe("FILE_READ_FAILED");
    expect(rec.attempts).toBe(3);
    expect(String(rec.reason)).toMatch(/EACCES|permission denied/i);
    await waitWritten(producer, 1);
    await stillRelays(p, consumer, producer, 1);
    expect((await treeHashes(p.output)).map((f) => f.rel)).toEqual(["after.txt", "readable.txt"]);
    // The locked directory is neither read nor reported as a file failure; its file stays.
    expect(consumer.logs().some((l) => typeof l.path === "string" && l.path.startsWith("locked"))).toBe(false);
    expect(await readdir(join(p.input, "locked"))).toEqual(["hidden.txt"]);
    count("permission-denied-to-error-dir");
    count("unreadable-dir-skipped");
  });
});

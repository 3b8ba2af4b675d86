import { randomBytes, randomUUID } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, mkdtemp, rename, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { pipeline } from "node:stream/promises";
import { connect } from "@nats-io/transport-node";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  consumeFiles,
  openStatusLedger,
  provision,
  publishFile,
  silentLogger,
  type StatusUpdate,
} from "@filerelay/core/internal";
import { spawnCli, startNats, startService, waitFor, waitForExit } from "./support/index.js";

const log = silentLogger();
const MiB = 1024 * 1024;
/** The relay watched end to end (FILERELAY_TEST_WATCH_BYTES to change it). */
const WATCH_BYTES = Number(process.env.FILERELAY_TEST_WATCH_BYTES ?? 1024 * MiB);

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "status-watch-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("status ledger through the SDK", () => {
  it("records a custom sink's location, links parent and children, keeps versions, and streams progress", async () => {
    await using nats = await startNats();
    const nc = await connect({ servers: nats.url });
    const config = { STREAM: "FILES", SUBJECT: "files.input", STREAM_REPLICAS: 1 };
    await provision(nc, config, { log, groups: ["custom", "quiet"] });
    await using ledger = await openStatusLedger(nc, { by: "test", sinkGroups: ["custom"] });
    const abort = new AbortController();
    const landed = new Map<string, number>();
    const sinks = Promise.all([
      consumeFiles({ nats: nc, group: "custom", signal: abort.signal, log }, async (ctx) => {
        let bytes = 0;
        for await (const chunk of ctx.open()) bytes += (chunk as Buffer).length;
        landed.set(ctx.envelope.id, bytes);
        return { location: `webhook://example/${ctx.envelope.filename}` };
      }),
      // A group that records nothing (status: false) does not appear in the records.
      consumeFiles({ nats: nc, group: "quiet", signal: abort.signal, log, status: false }, async () => {}),
    ]);
    try {
      const watch = ledger.watch();
      await watch.listening;
      const updates: StatusUpdate[] = [];
      const collecting = (async () => {
        for await (const u of watch) updates.push(u);
      })();

      const parent = await publishFile(
        nc,
        randomBytes(3 * MiB),
        { source: "sdk", subject: "in/a.bin" },
        {
          status: ledger,
          expectedSize: 3 * MiB,
          chunkBytes: 128 * 1024,
        },
      );
      const child = await publishFile(
        nc,
        Buffer.from("derived\n"),
        {
          source: "sdk",
          subject: "in/a.bin/part.txt",
          id: randomUUID(),
          extensions: { parentid: parent.id, jobid: "job-7" },
        },
        { status: ledger },
      );
      await waitFor(async () => (await ledger.get(child.id))?.state === "delivered", {
        message: "child delivered",
      });
      await waitFor(async () => (await ledger.get(parent.id))?.state === "delivered", {
        message: "parent delivered",
      });
      const p = await ledger.get(parent.id);
      expect(p).toMatchObject({
        state: "delivered",
        size: 3 * MiB,
        sha256: parent.sha256,
        children: [child.id],
        deliveries: { custom: { state: "delivered", location: "webhook://example/a.bin", attempts: 1 } },
      });
      expect(Object.keys(p?.deliveries ?? {})).toEqual(["custom"]);
      // received (upload) then published: the source's earlier entry was superseded, the timeline says when.
      expect(p?.events.map((e) => e.event)).toEqual(["detected", "published", "delivered"]);
      expect(landed.get(parent.id)).toBe(3 * MiB);
      const c = await ledger.get(child.id);
      expect(c).toMatchObject({ parentId: parent.id, jobId: "job-7", state: "delivered" });
      expect((await ledger.list({ job: "job-7" })).map((r) => r.id)).toEqual([child.id]);
      expect((await ledger.list({ parent: parent.id })).map((r) => r.id)).toEqual([child.id]);

      // A second version of the same path: history lists both, newest first.
      const v2 = await publishFile(nc, Buffer.from("v2"), { source: "sdk", subject: "in/a.bin" }, { status: ledger });
      await waitFor(async () => (await ledger.get(v2.id))?.state === "delivered", { message: "v2 delivered" });
      expect((await ledger.history("sdk", "in/a.bin")).map((r) => r.id)).toEqual([v2.id, parent.id]);

      // The watch saw the upload's and the sink's bytes rise, and the final states.
      await waitFor(() => updates.some((u) => u.id === v2.id && u.state === "delivered"), { message: "watch v2" });
      watch.close();
      await collecting;
      const uploads = updates.filter((u) => u.id === parent.id && u.kind === "progress" && u.group === undefined);
      const reads = updates.filter((u) => u.id === parent.id && u.kind === "progress" && u.group === "custom");
      expect(uploads.length).toBeGreaterThan(0);
      expect(reads.length).toBeGreaterThan(0);
      expect(reads.at(-1)?.bytes).toBe(3 * MiB);
      for (const series of [uploads, reads]) {
        for (let i = 1; i < series.length; i++) expect(series[i]!.bytes).toBeGreaterThanOrEqual(series[i - 1]!.bytes);
      }
      expect(updates.find((u) => u.id === parent.id && u.kind === "state" && u.state === "delivered")).toBeDefined();
    } finally {
      abort.abort();
      await sinks;
      await nc.close();
    }
  });

  it("indexes failures for list --state failed|error, and drops a failure once a replay delivers the file", async () => {
    await using nats = await startNats();
    const nc = await connect({ servers: nats.url });
    try {
      await provision(nc, { STREAM: "FILES", SUBJECT: "files.input", STREAM_REPLICAS: 1 }, { log });
      await using ledger = await openStatusLedger(nc, { by: "test", sinkGroups: ["a", "b"] });
      const envelope = (
        await publishFile(nc, Buffer.from("x"), { source: "s", subject: "d/x.csv" }, { status: ledger })
      ).envelope;
      await ledger.recordDelivery(envelope, "a", "delivered", { attempts: 1, location: "file:///out/x.csv" });
      await ledger.recordDelivery(envelope, "b", "failed", { attempts: 5, code: "WRITE_FAILED", reason: "EACCES" });
      const failed = await ledger.list({ state: "failed" });
      expect(failed.map((r) => r.id)).toEqual([envelope.id]);
      // Completed from the ledger itself: the other group's delivery is there too.
      expect(failed[0]?.deliveries).toMatchObject({
        a: { state: "delivered" },
        b: { state: "failed", code: "WRITE_FAILED" },
      });
      // A replay delivers it: the failure leaves the index, the record is delivered.
      await ledger.recordDelivery(envelope, "b", "delivered", { attempts: 1, supersede: true });
      expect(await ledger.list({ state: "failed" })).toEqual([]);
      expect((await ledger.get(envelope.id))?.state).toBe("delivered");
      await ledger.recordSource(
        {
          id: "4f6c0a0e-0000-5000-8000-000000000001",
          source: "s",
          subject: "bad.csv",
          size: 1,
          sha256: null,
          jobId: null,
          parentId: null,
        },
        "error",
        { code: "FILE_READ_FAILED", reason: "EACCES", attempts: 2, supersede: true },
      );
      expect((await ledger.list({ state: "error" })).map((r) => [r.subject, r.error?.code])).toEqual([
        ["bad.csv", "FILE_READ_FAILED"],
      ]);
    } finally {
      await nc.close();
    }
  });

  it("records nothing and fails nothing where the deployment has no ledger", async () => {
    await using nats = await startNats();
    const nc = await connect({ servers: nats.url });
    try {
      await provision(nc, { STREAM: "FILES", SUBJECT: "files.input", STREAM_REPLICAS: 1 }, { log, groups: ["g"] });
      const ledger = await openStatusLedger(nc, { by: "test", provision: false });
      const abort = new AbortController();
      let handled = 0;
      const sink = consumeFiles({ nats: nc, group: "g", signal: abort.signal, log }, () => {
        handled++;
        return Promise.resolve();
      });
      const r = await publishFile(nc, Buffer.from("x"), { source: "s", subject: "x" }, { status: ledger });
      await waitFor(() => handled === 1, { message: "handled without a ledger" });
      abort.abort();
      await sink;
      expect(await ledger.get(r.id)).toBeUndefined();
      expect(await ledger.list()).toEqual([]);
    } finally {
      await nc.close();
    }
  });
});

describe("filerelay files watch", () => {
  it(`shows the bytes of a ${WATCH_BYTES / MiB} MiB relay rising to the end, then delivered`, async () => {
    await using nats = await startNats();
    const input = join(root, "input");
    await mkdir(input, { recursive: true });
    await using consumer = startService("consumer", {
      NATS_URL: nats.url,
      INPUT_DIR: input,
      DELETE_AFTER_PROCESSING: "true",
      SOURCE: "big",
      POLL_INTERVAL_MS: "250",
      STABILITY_MS: "500",
      LOG_LEVEL: "info",
    });
    await using producer = startService("producer", {
      NATS_URL: nats.url,
      OUTPUT_DIR: join(root, "out"),
      LOG_LEVEL: "info",
    });
    await consumer.waitForLog((l) => l.msg === "consumer started", 30_000, "consumer started");
    await producer.waitForLog((l) => l.msg === "consuming files", 30_000, "producer consuming");

    const cwd = join(root, "cwd");
    await mkdir(cwd);
    const watcher = spawnCli(["files", "watch", "--json"], { NATS_URL: nats.url }, cwd);
    let stderr = "";
    watcher.stderr?.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
    const lines: StatusUpdate[] = [];
    const reading = (async () => {
      for await (const line of createInterface({ input: watcher.stdout! }))
        lines.push(JSON.parse(line) as StatusUpdate);
    })();
    await waitFor(() => stderr.includes("watching"), { message: "watch listening" });

    // Written elsewhere and renamed in: the consumer sees it whole.
    const staging = join(root, "big.bin");
    const block = randomBytes(MiB);
    await pipeline(
      (function* () {
        for (let i = 0; i < WATCH_BYTES / MiB; i++) yield block;
      })(),
      createWriteStream(staging),
    );
    await rename(staging, join(input, "big.bin"));

    await waitFor(() => lines.some((l) => l.kind === "state" && l.state === "delivered"), {
      timeoutMs: 240_000,
      intervalMs: 250,
      message: "delivered in the watch stream",
    });
    watcher.kill("SIGINT");
    expect(await waitForExit(watcher, 10_000)).toBe(0);
    await reading;

    const upload = lines.filter((l) => l.kind === "progress" && l.group === undefined);
    const write = lines.filter((l) => l.kind === "progress" && l.group === "file-producers");
    for (const series of [upload, write]) {
      // Several points on the way (at most ~4 a second each), rising, ending at the whole file.
      expect(series.length).toBeGreaterThan(3);
      for (let i = 1; i < series.length; i++) expect(series[i]!.bytes).toBeGreaterThanOrEqual(series[i - 1]!.bytes);
      expect(series.at(-1)?.bytes).toBe(WATCH_BYTES);
      expect(series.every((l) => l.total === WATCH_BYTES)).toBe(true);
      expect(series.some((l) => (l.progress ?? 0) > 0 && (l.progress ?? 0) < 1)).toBe(true);
    }
    const final = lines.find((l) => l.kind === "state" && l.state === "delivered");
    expect(final).toMatchObject({ total: WATCH_BYTES, bytes: WATCH_BYTES, progress: 1 });
  });
});

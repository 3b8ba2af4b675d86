import { watch } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { connectNats, provision, silentLogger } from "@filerelay/core";
import { startNats, startService, waitFor, type RunningService } from "./support/index.js";
import {
  createPublisher,
  defaultOutputName,
  fileSha,
  listFiles,
  outcomeLines,
  producerEnv,
  readDeadLetters,
  sdkLines,
  sha256,
  testFile,
  todayDir,
  type TestFile,
} from "./producer-support.js";

// Services run from packages/*/dist: `pnpm build` first (pnpm test does).

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "producer-it-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const ready = (svc: RunningService) =>
  svc.waitForLog((l) => l.msg === "consuming files", 30_000, "the producer to start consuming");

const waitOutcomes = (svc: RunningService, n: number, timeoutMs = 30_000) =>
  waitFor(() => (outcomeLines(svc).length >= n ? outcomeLines(svc) : undefined), {
    timeoutMs,
    message: `${n} file outcome lines from producer ${svc.pid}`,
  });

describe("producer service, filesystem sink", () => {
  it("lays files out as each ORGANIZE_BY strategy documents, with the default template", async () => {
    await using nats = await startNats();
    await using pub = await createPublisher(nats.url);
    const strategies = ["date", "type", "source", "none"] as const;
    const services = strategies.map((s) =>
      startService(
        "producer",
        producerEnv(nats.url, { PRODUCER_GROUP: `org-${s}`, ORGANIZE_BY: s, OUTPUT_DIR: join(root, s) }),
      ),
    );
    try {
      await Promise.all(services.map(ready));
      const files = [
        testFile("reports/q1/Report.CSV", "a,b\n1,2\n"),
        testFile("photo.jpg", Buffer.from([0xff, 0xd8, 0xff, 0xe0]), { source: "cam" }),
        testFile("notes/README", "no extension\n"),
      ];
      const day = todayDir();
      for (const f of files) await pub.publish(f);
      await Promise.all(services.map((svc) => waitOutcomes(svc, files.length)));

      const [csv, jpg, readme] = files.map((f) => f.envelope) as [
        TestFile["envelope"],
        TestFile["envelope"],
        TestFile["envelope"],
      ];
      // The default template: {{.Name}}-{{.ShortID}}{{.Ext}} (Report-1a2b3c4d.CSV, README-1a2b3c4d).
      const n = defaultOutputName;
      expect(n(csv)).toBe(`Report-${csv.id.replace(/-/g, "").slice(0, 8)}.CSV`);
      const expected: Record<(typeof strategies)[number], string[]> = {
        date: [`${day}/${n(csv)}`, `${day}/${n(jpg)}`, `${day}/${n(readme)}`],
        type: [`csv/${n(csv)}`, `jpg/${n(jpg)}`, `unknown/${n(readme)}`],
        source: [`api/${n(csv)}`, `cam/${n(jpg)}`, `api/${n(readme)}`],
        none: [n(csv), n(jpg), n(readme)],
      };
      for (const [i, s] of strategies.entries()) {
        expect(await listFiles(join(root, s))).toEqual([...expected[s]].sort());
        for (const [j, f] of files.entries()) {
          expect(await fileSha(join(root, s, expected[s][j]!))).toBe(f.envelope.sha256);
        }
        // One structured line per file, naming where it landed.
        const lines = outcomeLines(services[i]!);
        expect(lines.map((l) => l.outcome)).toEqual(["written", "written", "written"]);
        const line = lines.find((l) => l.fileId === csv.id)!;
        expect(line).toMatchObject({
          path: "reports/q1/Report.CSV",
          size: 8,
          sha256: csv.sha256,
          attempts: 1,
          location: join(root, s, expected[s][0]!),
        });
        expect(typeof line.durationMs).toBe("number");
      }
    } finally {
      await Promise.all(services.map((s) => s.kill()));
    }
  });

  it("applies each ON_CONFLICT mode to two same-named files ({{.Name}}{{.Ext}})", async () => {
    await using nats = await startNats();
    await using pub = await createPublisher(nats.url);
    const modes = ["rename", "overwrite", "skip", "fail"] as const;
    const services = modes.map((m) =>
      startService(
        "producer",
        producerEnv(nats.url, {
          PRODUCER_GROUP: `cf-${m}`,
          ON_CONFLICT: m,
          ORGANIZE_BY: "none",
          FILENAME_TEMPLATE: "{{.Name}}{{.Ext}}",
          OUTPUT_DIR: join(root, m),
        }),
      ),
    );
    try {
      await Promise.all(services.map(ready));
      const first = testFile("a/report.txt", "first version\n");
      const second = testFile("b/report.txt", "second, different version\n");
      await pub.publish(first);
      await Promise.all(services.map((svc) => waitOutcomes(svc, 1)));
      await pub.publish(second);
      const [rename, overwrite, skip] = services as [RunningService, RunningService, RunningService, RunningService];
      await Promise.all([rename, overwrite, skip].map((svc) => waitOutcomes(svc, 2)));
      const dead = await waitFor(async () => (await readDeadLetters(pub.nc, "cf-fail")).find((d) => d.code), {
        message: "the ON_CONFLICT=fail dead letter",
      });

      expect(await listFiles(join(root, "rename"))).toEqual(["report-1.txt", "report.txt"]);
      expect(await readFile(join(root, "rename", "report.txt"), "utf8")).toBe("first version\n");
      expect(await readFile(join(root, "rename", "report-1.txt"), "utf8")).toBe("second, different version\n");

      expect(await listFiles(join(root, "overwrite"))).toEqual(["report.txt"]);
      expect(await readFile(join(root, "overwrite", "report.txt"), "utf8")).toBe("second, different version\n");

      expect(await listFiles(join(root, "skip"))).toEqual(["report.txt"]);
      expect(await readFile(join(root, "skip", "report.txt"), "utf8")).toBe("first version\n");
      expect(outcomeLines(skip).map((l) => l.outcome)).toEqual(["written", "skipped"]);

      expect(await listFiles(join(root, "fail"))).toEqual(["report.txt"]);
      expect(await readFile(join(root, "fail", "report.txt"), "utf8")).toBe("first version\n");
      expect(dead.code).toBe("CONFLICT");
      expect(dead.headers["ce-id"]).toBe(second.envelope.id);
      expect(Buffer.from(dead.body).toString()).toBe("second, different version\n");
    } finally {
      await Promise.all(services.map((s) => s.kill()));
    }
  });

  it("writes a redelivered envelope once, logs its effective config, and drains on SIGTERM (exit 0)", async () => {
    await using nats = await startNats();
    await using pub = await createPublisher(nats.url);
    const out = join(root, "out");
    await using svc = startService("producer", producerEnv(nats.url, { OUTPUT_DIR: out }));
    await ready(svc);
    const config = svc.logs().find((l) => l.msg === "effective configuration");
    expect(config?.config).toMatchObject({ OUTPUT_DIR: out, PRODUCER_GROUP: "file-producers", SINK: "fs" });

    const f = testFile("in/data.bin", Buffer.alloc(300_000, 9));
    await pub.publish(f);
    await waitOutcomes(svc, 1);
    // The same file version again (as after a lost ack): a new message, same ce-id and content.
    await pub.publishRaw(f, {});
    const lines = await waitOutcomes(svc, 2);
    expect(lines.map((l) => l.outcome)).toEqual(["written", "duplicate"]);
    expect(lines[1]!.location).toBe(lines[0]!.location);
    expect(await listFiles(out)).toEqual([`${todayDir()}/${defaultOutputName(f.envelope)}`]);
    expect(await fileSha(lines[0]!.location as string)).toBe(f.envelope.sha256);

    expect(await svc.stop()).toBe(0);
    expect(svc.logs().some((l) => l.msg === "producer stopped")).toBe(true);
  });

  it("leaves no partial after a SIGKILL mid-write; the message is redelivered and written once", async () => {
    // A large inline payload needs a larger max_payload than the 1 MiB default.
    await using nats = await startNats({ config: "max_payload: 33554432\n" });
    await using pub = await createPublisher(nats.url);
    const out = join(root, "out");
    const content = Buffer.alloc(24 * 1024 * 1024);
    for (let i = 0; i < content.length; i += 4096) content.writeUInt32BE(i, i);
    const f = testFile("big.bin", content);
    const env = { OUTPUT_DIR: out, ORGANIZE_BY: "none", ACK_WAIT_MS: "2000" };

    // Small, fsynced chunks make the first write slow enough to be caught in the middle.
    const first = startService(
      "producer",
      producerEnv(nats.url, { ...env, CHUNK_SIZE: "4096", FSYNC_EVERY_CHUNKS: "1" }),
    );
    await ready(first);
    const finalName = join(out, defaultOutputName(f.envelope));
    let killing: Promise<void> | undefined;
    const watcher = watch(out, (_event, name) => {
      if (typeof name === "string" && name.startsWith(".filerelay-")) killing ??= first.kill();
    });
    try {
      await pub.publish(f);
      // waitFor awaits what the condition returns: hand it a boolean, not the kill promise.
      await waitFor(() => killing !== undefined, { message: "a temp file to appear" });
      await killing;
    } finally {
      watcher.close();
    }
    expect(first.proc.signalCode).toBe("SIGKILL");
    const left = await listFiles(out);
    expect(left.some((n) => n.startsWith(".filerelay-") && n.endsWith(".tmp"))).toBe(true);
    expect(left).not.toContain(defaultOutputName(f.envelope));
    const partial = left.find((n) => n.startsWith(".filerelay-"))!;
    expect((await stat(join(out, partial))).size).toBeLessThan(content.length);

    await using second = startService("producer", producerEnv(nats.url, env));
    const [line] = await waitOutcomes(second, 1, 60_000);
    expect(line).toMatchObject({ fileId: f.envelope.id, outcome: "written", location: finalName });
    // Usually 2; nats-server 2.9 may not count a delivery whose pull request's connection died
    // before the message went out (seen under heavy load), so the second producer's can be 1.
    expect(line?.attempts).toBeGreaterThanOrEqual(1);
    // The killed writer's temp file is recognised by age alone (no pid or hostname): once it has
    // been untouched for the 30 s a live writer never lets pass, the new producer removes it.
    await second.waitForLog(
      (l) => l.msg === "removed stale temp files" && l.removed === 1,
      60_000,
      "the killed writer's temp file removed",
    );
    expect(await listFiles(out)).toEqual([defaultOutputName(f.envelope)]);
    expect(await fileSha(finalName)).toBe(sha256(content));
  });

  it("creates nothing outside OUTPUT_DIR through a symlinked date directory: dead-lettered PATH_UNSAFE", async () => {
    await using nats = await startNats();
    await using pub = await createPublisher(nats.url);
    const out = join(root, "out");
    const outside = join(root, "outside");
    await mkdir(out);
    await mkdir(outside);
    // ORGANIZE_BY=date writes to OUTPUT_DIR/YYYY/MM/DD: its first component leads outside.
    const [year] = todayDir().split("/");
    await symlink(outside, join(out, year!));
    await using svc = startService("producer", producerEnv(nats.url, { OUTPUT_DIR: out, ORGANIZE_BY: "date" }));
    await ready(svc);
    const f = testFile("in/today.txt", "today\n");
    await pub.publish(f);
    const [dead] = await waitFor(
      async () => {
        const d = await readDeadLetters(pub.nc, "file-producers");
        return d.length > 0 ? d : undefined;
      },
      { message: "the dead letter" },
    );
    expect(dead).toMatchObject({ code: "PATH_UNSAFE", deliveries: 1 });
    expect(dead!.headers["ce-id"]).toBe(f.envelope.id);
    expect(await readdir(outside)).toEqual([]);
  });

  it("on SIGTERM finishes the write in progress, acks it and exits 0", async () => {
    await using nats = await startNats({ config: "max_payload: 33554432\n" });
    await using pub = await createPublisher(nats.url);
    const out = join(root, "out");
    const content = Buffer.alloc(16 * 1024 * 1024, 5);
    const f = testFile("drain.bin", content);
    await using svc = startService(
      "producer",
      producerEnv(nats.url, {
        OUTPUT_DIR: out,
        ORGANIZE_BY: "none",
        CHUNK_SIZE: "4096",
        FSYNC_EVERY_CHUNKS: "1",
        SHUTDOWN_TIMEOUT_MS: "60000",
      }),
    );
    await ready(svc);
    let signalled = false;
    const watcher = watch(out, (_event, name) => {
      if (!signalled && typeof name === "string" && name.startsWith(".filerelay-")) {
        signalled = true;
        svc.proc.kill("SIGTERM");
      }
    });
    try {
      await pub.publish(f);
      await waitFor(() => signalled, { message: "the write to start" });
    } finally {
      watcher.close();
    }
    expect(await svc.exited(60_000)).toBe(0);
    expect(outcomeLines(svc)).toMatchObject([{ fileId: f.envelope.id, outcome: "written" }]);
    expect(sdkLines(svc, "acked")).toHaveLength(1);
    expect(await listFiles(out)).toEqual([defaultOutputName(f.envelope)]);
    expect(await fileSha(join(out, defaultOutputName(f.envelope)))).toBe(f.envelope.sha256);
    // Nothing left for the group: the message was acknowledged before exit.
    const info = await (await jetstreamManager(pub.nc)).consumers.info("FILES", "file-producers");
    expect([info.num_pending, info.num_ack_pending]).toEqual([0, 0]);
  });

  it("dead-letters hostile envelopes with precise codes, writes nothing outside OUTPUT_DIR, keeps serving", async () => {
    await using nats = await startNats();
    await using pub = await createPublisher(nats.url);
    const out = join(root, "out");
    const errorDir = join(root, "error");
    await using svc = startService(
      "producer",
      producerEnv(nats.url, {
        OUTPUT_DIR: out,
        ERROR_DIR: errorDir,
        ORGANIZE_BY: "source",
        FILENAME_TEMPLATE: "{{.RelDir}}/{{.Name}}{{.Ext}}",
        ALLOWED_CONTENT_TYPES: "text/plain,application/octet-stream",
        MAX_FILE_SIZE: "100KB",
      }),
    );
    await ready(svc);
    const passwdBefore = await stat("/etc/passwd");

    const valid: TestFile[] = [];
    const publishValid = async () => {
      const f = testFile(`ok/file-${valid.length}.txt`, `valid ${valid.length}\n`);
      valid.push(f);
      await pub.publish(f);
    };
    const hostile: { name: string; file: TestFile; expected: string }[] = [];
    const publishHostile = async (
      name: string,
      expected: string,
      file: TestFile,
      headers: Record<string, string | null> = {},
      body?: Buffer,
    ) => {
      hostile.push({ name, file, expected });
      await pub.publishRaw(file, headers, body);
      await publishValid();
    };

    await publishValid();
    await publishHostile("missing headers", "ENVELOPE_INVALID", testFile("m.txt", "m"), {
      "ce-sha256": null,
      "ce-time": null,
      "ce-specversion": null,
    });
    await publishHostile("wrong sha256", "PAYLOAD_DIGEST_MISMATCH", testFile("w.txt", "real bytes"), {
      "ce-sha256": sha256("other bytes"),
    });
    await publishHostile(
      "body length != ce-filesize",
      "ENVELOPE_SIZE_MISMATCH",
      testFile("s.txt", "12345"),
      {},
      Buffer.from("123"),
    );
    await publishHostile("../../etc/passwd subject", "PATH_UNSAFE", testFile("../../etc/passwd", "root::0:0"));
    await publishHostile("../../etc/passwd filename", "PATH_UNSAFE", testFile("x", "root::0:0"), {
      "ce-filename": "../../etc/passwd",
    });
    await publishHostile("absolute path", "PATH_UNSAFE", testFile("/etc/passwd", "root::0:0"));
    await publishHostile("NUL byte", "NAME_INVALID", testFile("dir/a\u0000b.txt", "nul"));
    await publishHostile("300-byte name", "NAME_INVALID", testFile(`${"n".repeat(296)}.txt`, "long"));
    await publishHostile("disallowed content type", "CONTENT_TYPE_NOT_ALLOWED", testFile("i.png", "png"), {
      "content-type": "image/png",
    });
    await publishHostile("too large", "ENVELOPE_TOO_LARGE", testFile("big.txt", Buffer.alloc(200_000, 65)));

    // A hostile source cannot steer the path out either: it is sanitized and written inside.
    const hostileSource = testFile("ok/src.txt", "from a strange source\n", { source: "../../etc" });
    await pub.publish(hostileSource);

    const dead = await waitFor(
      async () => {
        const d = await readDeadLetters(pub.nc, "file-producers");
        return d.length >= hostile.length ? d : undefined;
      },
      { message: `${hostile.length} dead letters` },
    );
    await waitOutcomes(svc, valid.length + 1);

    expect(dead).toHaveLength(hostile.length);
    for (const h of hostile) {
      const d = dead.find((x) => x.headers["ce-id"] === h.file.envelope.id);
      expect(d, h.name).toBeDefined();
      expect(d!.code, h.name).toBe(h.expected);
      expect(d!.deliveries, h.name).toBe(1);
      expect(d!.error, h.name).toBeTruthy();
      // Also recorded in ERROR_DIR as <id>.envelope.json, written (and fsynced) after the DLQ stream has it.
      const day = new Date().toISOString().slice(0, 10);
      const record = JSON.parse(
        await waitFor(() => readFile(join(errorDir, day, `${h.file.envelope.id}.envelope.json`), "utf8"), {
          message: `${h.name}: its error directory record`,
        }),
      ) as Record<string, unknown>;
      expect(JSON.stringify(record), h.name).toContain(h.expected);
    }

    const written = await listFiles(out);
    expect(written).toEqual([...valid.map((f) => `api/${f.envelope.subject}`), "__.._etc/ok/src.txt"].sort());
    for (const f of valid) expect(await fileSha(join(out, "api", f.envelope.subject))).toBe(f.envelope.sha256);
    // Nothing anywhere else: the test root holds only OUTPUT_DIR and ERROR_DIR content.
    const everything = await listFiles(root);
    expect(everything.filter((p) => !p.startsWith("out/") && !p.startsWith("error/"))).toEqual([]);
    expect((await stat("/etc/passwd")).mtimeMs).toBe(passwdBefore.mtimeMs);
  });

  it("delivers files published before any producer started, to every group (file-producers and audit)", async () => {
    await using nats = await startNats();
    await using pub = await createPublisher(nats.url);
    // What the consumer does at start-up with SINK_GROUPS=file-producers,audit.
    const nc = await connectNats({ NATS_URL: [nats.url] }, { name: "test", log: silentLogger() });
    await provision(
      nc,
      { STREAM: "FILES", SUBJECT: "files.input", STREAM_REPLICAS: 1 },
      {
        log: silentLogger(),
        groups: ["file-producers", "audit"],
      },
    );
    await nc.close();
    const files = Array.from({ length: 6 }, (_, i) => testFile(`early/${i}.bin`, Buffer.alloc(1000 + i, i)));
    for (const f of files) await pub.publish(f);

    await using main = startService("producer", producerEnv(nats.url, { OUTPUT_DIR: join(root, "main") }));
    await using audit = startService(
      "producer",
      producerEnv(nats.url, { OUTPUT_DIR: join(root, "audit"), PRODUCER_GROUP: "audit", ORGANIZE_BY: "none" }),
    );
    await Promise.all([waitOutcomes(main, files.length), waitOutcomes(audit, files.length)]);
    const day = todayDir();
    expect(await listFiles(join(root, "main"))).toEqual(
      files.map((f) => `${day}/${defaultOutputName(f.envelope)}`).sort(),
    );
    expect(await listFiles(join(root, "audit"))).toEqual(files.map((f) => defaultOutputName(f.envelope)).sort());
    for (const f of files) {
      expect(await fileSha(join(root, "audit", defaultOutputName(f.envelope)))).toBe(f.envelope.sha256);
      expect(await fileSha(join(root, "main", day, defaultOutputName(f.envelope)))).toBe(f.envelope.sha256);
    }
  });
});

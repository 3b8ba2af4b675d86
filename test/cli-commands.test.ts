import { spawn } from "node:child_process";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  consumeFiles,
  deadLetter,
  envelopeToHeaders,
  fileVersionId,
  headersToRecord,
  openPayload,
  parseEnvelope,
  PermanentError,
  provision,
  silentLogger,
  computeFingerprint,
  FINGERPRINT_HEAD_BYTES,
  type Envelope,
  type FileOutcome,
} from "@filerelay/core/internal";
import { guardChild, startNats, waitFor, waitForExit, type NatsServer } from "./support/index.js";

const CLI = fileURLToPath(new URL("../packages/cli/dist/main.js", import.meta.url));
const GROUP = "cli-test";
const log = silentLogger();

interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the built CLI to completion in an empty directory (so no stray .env is read). */
async function cli(args: string[], env: Record<string, string>, cwd: string): Promise<CliRun> {
  const child = guardChild(
    spawn(process.execPath, [CLI, ...args], {
      cwd,
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    }),
  );
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (c: Buffer) => (stdout += c.toString("utf8")));
  child.stderr?.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
  const code = await waitForExit(child, 60_000);
  return { code, stdout, stderr };
}

/** Runs the CLI with --json and parses its one JSON document, failing loudly on a non-zero exit. */
async function cliJson<T>(args: string[], env: Record<string, string>, cwd: string): Promise<T> {
  const run = await cli([...args, "--json"], env, cwd);
  expect(run.code, `filerelay ${args.join(" ")} failed: ${run.stderr}`).toBe(0);
  return JSON.parse(run.stdout) as T;
}

function inlineEnvelope(body: Buffer, filename = `${randomUUID()}.csv`): Envelope {
  return {
    id: randomUUID(),
    source: "cli-test",
    type: "io.filerelay.file.v1",
    time: new Date(),
    subject: `in/${filename}`,
    contentType: "text/csv",
    filename,
    size: body.length,
    sha256: createHash("sha256").update(body).digest("hex"),
    mtime: new Date(),
    payload: { kind: "inline" },
  };
}

async function publish(nc: NatsConnection, env: Envelope, body: Buffer): Promise<number> {
  const ack = await jetstream(nc).publish("files.input", body, { headers: envelopeToHeaders(env) });
  return ack.seq;
}

async function sha256Of(stream: AsyncIterable<Buffer>): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of stream) hash.update(chunk);
  return hash.digest("hex");
}

interface Fixture {
  nats: NatsServer;
  nc: NatsConnection;
  dir: string;
  env: Record<string, string>;
}

async function setUp(): Promise<Fixture> {
  const nats = await startNats();
  const nc = await connect({ servers: nats.url });
  // The group gives the interest-retention stream a reason to keep envelopes.
  await provision(nc, { STREAM: "FILES", SUBJECT: "files.input", STREAM_REPLICAS: 1 }, { log, groups: [GROUP] });
  const dir = await mkdtemp(join(tmpdir(), "filerelay-cli-"));
  return { nats, nc, dir, env: { NATS_URL: nats.url } };
}

async function tearDown(f: Fixture | undefined): Promise<void> {
  if (!f) return;
  await f.nc.close();
  await f.nats[Symbol.asyncDispose]();
  await rm(f.dir, { recursive: true, force: true });
}

describe("filerelay usage and configuration errors", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "filerelay-cli-usage-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  // Port 9 (discard) is never a NATS server: usage errors must be reported before any connection.
  const env = { NATS_URL: "nats://127.0.0.1:9" };

  it("exits 2 with a pointer to the help for unknown commands, options and missing arguments", async () => {
    const unknown = await cli(["frobnicate"], env, dir);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown command "frobnicate"');
    expect(unknown.stderr).toContain("filerelay --help");

    const badOption = await cli(["status", "--frobnicate"], env, dir);
    expect(badOption.code).toBe(2);
    expect(badOption.stderr).toContain("--frobnicate");

    const replay = await cli(["dlq", "replay"], env, dir);
    expect(replay.code).toBe(2);
    expect(replay.stderr).toContain("--all or an <id|seq>");
    expect(replay.stderr).toContain("filerelay dlq replay --help");

    const wrongOption = await cli(["dlq", "list", "--all"], env, dir);
    expect(wrongOption.code).toBe(2);
    expect(wrongOption.stderr).toContain("dlq list does not take --all");

    const send = await cli(["send"], env, dir);
    expect(send.code).toBe(2);
    expect(send.stderr).toContain("send needs <file>");
  });

  it("prints help per command and exits 0", async () => {
    const top = await cli(["--help"], env, dir);
    expect(top.code).toBe(0);
    for (const command of ["status", "dlq list", "dlq replay", "send", "tail"]) expect(top.stdout).toContain(command);
    const replay = await cli(["dlq", "replay", "--help"], env, dir);
    expect(replay.code).toBe(0);
    expect(replay.stdout).toContain("new Nats-Msg-Id");
  });

  it("exits 78 naming the variable on bad configuration, and 1 when NATS is unreachable", async () => {
    const bad = await cli(["status"], { ...env, STREAM: "not.a.name" }, dir);
    expect(bad.code).toBe(78);
    expect(bad.stderr).toContain("STREAM");

    const down = await cli(["status"], env, dir);
    expect(down.code).toBe(1);
    expect(down.stderr).toContain("NATS_CONNECT_FAILED");
  });
});

describe("filerelay status", () => {
  let f: Fixture | undefined;
  beforeAll(async () => {
    f = await setUp();
  });
  afterAll(() => tearDown(f));

  it("shows the stream and the group's pending and ack-pending counts", async () => {
    if (!f) throw new Error("no fixture");
    const N = 3;
    for (let i = 0; i < N; i++) {
      const body = randomBytes(500);
      await publish(f.nc, inlineEnvelope(body), body);
    }
    interface StatusDoc {
      streams: { name: string; exists: boolean; messages: number }[];
      groups: { name: string; pending: number; ackPending: number; redelivered: number }[];
      dlq: { messages: number };
      buckets: { name: string; kind: string; exists: boolean }[];
    }
    const before = await cliJson<StatusDoc>(["status"], f.env, f.dir);
    expect(before.streams.find((s) => s.name === "FILES")).toMatchObject({ exists: true, messages: N });
    expect(before.streams.find((s) => s.name === "FILES_DLQ")).toMatchObject({ exists: true, messages: 0 });
    expect(before.groups).toEqual([expect.objectContaining({ name: GROUP, pending: N, ackPending: 0 })]);
    expect(before.dlq.messages).toBe(0);
    expect(before.buckets.find((b) => b.name === "FILES_payloads")).toMatchObject({ kind: "object", exists: true });

    // One delivered, not acknowledged: it moves from pending to ack pending.
    const consumer = await jetstream(f.nc).consumers.get("FILES", GROUP);
    const m = await consumer.next({ expires: 5000 });
    expect(m).not.toBeNull();
    const after = await cliJson<StatusDoc>(["status"], f.env, f.dir);
    expect(after.groups).toEqual([expect.objectContaining({ name: GROUP, pending: N - 1, ackPending: 1 })]);

    const human = await cli(["status"], f.env, f.dir);
    expect(human.code).toBe(0);
    expect(human.stdout).toContain("FILES_DLQ");
    expect(human.stdout).toContain(GROUP);
  });
});

interface DlqEntry {
  seq: number;
  id: string | null;
  filename: string | null;
  group: string;
  code: string | null;
  error: string | null;
  deliveries: number | null;
  time: string;
  headers: Record<string, string>;
}

describe("filerelay dlq", () => {
  let f: Fixture | undefined;
  beforeAll(async () => {
    f = await setUp();
  });
  afterAll(() => tearDown(f));

  it("lists dead letters with their code, replays one back onto the subject, and purges", async () => {
    if (!f) throw new Error("no fixture");
    const { nc, env, dir } = f;
    const files = [0, 1, 2].map(() => {
      const body = randomBytes(2000);
      return { body, envelope: inlineEnvelope(body) };
    });
    const [a, b, c] = files;
    if (!a || !b || !c) throw new Error("unreachable");

    // A sink group that rejects every file permanently until told otherwise.
    const rejecting = new Set(files.map((x) => x.envelope.id));
    const outcomes: FileOutcome[] = [];
    const received: { id: string; headers: Record<string, string>; sha256: string }[] = [];
    const ac = new AbortController();
    const sink = consumeFiles(
      { nats: nc, group: GROUP, log, signal: ac.signal, onOutcome: (o) => outcomes.push(o), fetchExpiresMs: 1000 },
      async (ctx) => {
        if (rejecting.has(ctx.envelope.id)) {
          throw new PermanentError("written bytes do not match", { code: "CHECKSUM_MISMATCH" });
        }
        received.push({
          id: ctx.envelope.id,
          headers: { ...ctx.headers },
          sha256: await sha256Of(ctx.open() as AsyncIterable<Buffer>),
        });
      },
    );
    try {
      for (const x of files) await publish(nc, x.envelope, x.body);
      await waitFor(() => outcomes.filter((o) => o.outcome === "dead-lettered").length === 3, {
        message: "three dead letters",
      });

      const listed = await cliJson<DlqEntry[]>(["dlq", "list"], env, dir);
      expect(listed).toHaveLength(3);
      for (const x of files) {
        expect(listed.find((e) => e.id === x.envelope.id)).toMatchObject({
          filename: x.envelope.filename,
          group: GROUP,
          code: "CHECKSUM_MISMATCH",
          error: expect.stringContaining("written bytes do not match") as unknown,
          deliveries: 1,
        });
      }
      expect((await cliJson<DlqEntry[]>(["dlq", "list", "--group", "other"], env, dir)).length).toBe(0);
      const table = await cli(["dlq", "list"], env, dir);
      expect(table.stdout).toContain("CHECKSUM_MISMATCH");
      expect(table.stdout).toContain("3 dead letters");

      // show: every header plus the metadata
      const entryA = listed.find((e) => e.id === a.envelope.id);
      if (!entryA) throw new Error("A not listed");
      const shown = await cliJson<DlqEntry[]>(["dlq", "show", String(entryA.seq)], env, dir);
      expect(shown).toHaveLength(1);
      expect(shown[0]?.headers).toMatchObject({
        "ce-id": a.envelope.id,
        "ce-sha256": a.envelope.sha256,
        "filerelay-error-code": "CHECKSUM_MISMATCH",
        "filerelay-group": GROUP,
      });

      // replay A by ce-id: the group gets it again, under a new Nats-Msg-Id, without error headers
      rejecting.delete(a.envelope.id);
      const replayed = await cliJson<{ replayed: { id: string; dlqSeqs: number[]; seq: number; msgId: string }[] }>(
        ["dlq", "replay", a.envelope.id],
        env,
        dir,
      );
      expect(replayed.replayed).toHaveLength(1);
      const r = replayed.replayed[0];
      expect(r).toMatchObject({ id: a.envelope.id, dlqSeqs: [entryA.seq] });
      expect(r?.msgId).not.toBe(a.envelope.id);
      const got = await waitFor(() => received.find((x) => x.id === a.envelope.id), {
        message: "the replayed envelope at the sink",
      });
      expect(got.sha256).toBe(a.envelope.sha256);
      expect(got.headers["Nats-Msg-Id"]).toBe(r?.msgId);
      expect(Object.keys(got.headers).filter((k) => k.toLowerCase().startsWith("filerelay-"))).toEqual([]);
      expect(parseEnvelope(got.headers)).toEqual(a.envelope);

      const left = await cliJson<DlqEntry[]>(["dlq", "list"], env, dir);
      expect(left.map((e) => e.id).sort()).toEqual([b.envelope.id, c.envelope.id].sort());

      // Unknown ids fail (exit 1) and change nothing.
      const missing = await cli(["dlq", "replay", randomUUID()], env, dir);
      expect(missing.code).toBe(1);
      expect(missing.stderr).toContain("no dead letter with ce-id");

      // purge one by sequence, then the rest with --all
      const entryB = left.find((e) => e.id === b.envelope.id);
      expect(await cliJson<{ purged: number }>(["dlq", "purge", String(entryB?.seq)], env, dir)).toEqual({
        purged: 1,
      });
      expect((await cliJson<DlqEntry[]>(["dlq", "list"], env, dir)).map((e) => e.id)).toEqual([c.envelope.id]);
      expect(await cliJson<{ purged: number }>(["dlq", "purge", "--all"], env, dir)).toEqual({ purged: 1 });
      expect(await cliJson<DlqEntry[]>(["dlq", "list"], env, dir)).toEqual([]);
      // B and C were never replayed.
      expect(received.map((x) => x.id)).toEqual([a.envelope.id]);
    } finally {
      ac.abort();
      await sink;
    }
  });
});

describe("filerelay dlq replay of an envelope several groups gave up on", () => {
  let f: Fixture | undefined;
  beforeAll(async () => {
    f = await setUp();
  });
  afterAll(() => tearDown(f));

  it("publishes it once and removes every group's entry", async () => {
    if (!f) throw new Error("no fixture");
    const body = randomBytes(300);
    const envelope = inlineEnvelope(body);
    // Written exactly as the producers' SDK writes dead letters.
    for (const group of ["g1", "g2"]) {
      await deadLetter(f.nc, {
        group,
        headers: envelopeToHeaders(envelope),
        body,
        code: "WRITE_FAILED",
        error: "disk full",
        deliveries: 5,
        msgId: `${group}:1`,
      });
    }
    const listed = await cliJson<DlqEntry[]>(["dlq", "list"], f.env, f.dir);
    expect(listed.map((e) => [e.group, e.id, e.code, e.deliveries])).toEqual([
      ["g1", envelope.id, "WRITE_FAILED", 5],
      ["g2", envelope.id, "WRITE_FAILED", 5],
    ]);
    const jsm = await jetstreamManager(f.nc);
    const before = (await jsm.streams.info("FILES")).state.last_seq;

    const out = await cliJson<{ replayed: { dlqSeqs: number[]; seq: number }[] }>(
      ["dlq", "replay", envelope.id],
      f.env,
      f.dir,
    );
    expect(out.replayed).toHaveLength(1);
    expect(out.replayed[0]?.dlqSeqs.sort()).toEqual(listed.map((e) => e.seq).sort());
    expect((await jsm.streams.info("FILES")).state.last_seq).toBe(before + 1);
    expect(await cliJson<DlqEntry[]>(["dlq", "list"], f.env, f.dir)).toEqual([]);
  });
});

describe("filerelay send and tail", () => {
  let f: Fixture | undefined;
  beforeAll(async () => {
    f = await setUp();
  });
  afterAll(() => tearDown(f));

  async function sendAndRead(
    file: string,
  ): Promise<{ envelope: Envelope; sha256: string; headers: Record<string, string> }> {
    if (!f) throw new Error("no fixture");
    const result = await cliJson<{ id: string; seq: number; duplicate: boolean }>(["send", file], f.env, f.dir);
    expect(result.duplicate).toBe(false);
    const jsm = await jetstreamManager(f.nc);
    const stored = await jsm.streams.getMessage("FILES", { seq: result.seq });
    if (!stored) throw new Error("the sent envelope is not in the stream");
    const headers = headersToRecord(stored.header);
    const envelope = parseEnvelope(headers);
    expect(envelope.id).toBe(result.id);
    const sha256 = await sha256Of(openPayload(f.nc, envelope, stored.data) as AsyncIterable<Buffer>);
    return { envelope, sha256, headers };
  }

  async function consumerId(path: string, source: string, name: string): Promise<string> {
    const st = await stat(path);
    const bytes = await readFile(path);
    const head = bytes.subarray(0, FINGERPRINT_HEAD_BYTES);
    // Files sent inline are fingerprinted by their whole content.
    const sha256 = st.size <= 256 * 1024 ? createHash("sha256").update(bytes).digest("hex") : undefined;
    const { ino, ctimeMs } = st;
    return fileVersionId(
      computeFingerprint({ head, sha256, size: st.size, mtimeMs: st.mtimeMs, ino, ctimeMs, source, relPath: name }),
    );
  }

  it("publishes a small file inline and a large one through the Object Store, both reading back intact", async () => {
    if (!f) throw new Error("no fixture");
    const inputDir = join(f.dir, "orders");
    await mkdir(inputDir);
    const small = randomBytes(10_000);
    const smallPath = join(inputDir, "small.csv");
    await writeFile(smallPath, small);
    const large = randomBytes(256 * 1024 + 70_000);
    const largePath = join(inputDir, "large.bin");
    await writeFile(largePath, large);

    const s = await sendAndRead(smallPath);
    expect(s.envelope).toMatchObject({
      source: "orders",
      subject: "small.csv",
      filename: "small.csv",
      contentType: "text/csv",
      size: small.length,
      payload: { kind: "inline" },
    });
    expect(s.sha256).toBe(createHash("sha256").update(small).digest("hex"));
    expect(s.envelope.sha256).toBe(s.sha256);
    expect(s.headers["Nats-Msg-Id"]).toBe(s.envelope.id);
    // The consumer on this directory would have given this file version the same ce-id.
    expect(s.envelope.id).toBe(await consumerId(smallPath, "orders", "small.csv"));

    const l = await sendAndRead(largePath);
    expect(l.envelope).toMatchObject({
      size: large.length,
      contentType: "application/octet-stream",
      payload: { kind: "object", bucket: "FILES_payloads", name: l.envelope.id },
    });
    expect(l.sha256).toBe(createHash("sha256").update(large).digest("hex"));
    expect(l.envelope.sha256).toBe(l.sha256);

    // Sending the same version again is dropped by JetStream's duplicate window.
    const again = await cliJson<{ duplicate: boolean }>(["send", smallPath, "--source", "orders"], f.env, f.dir);
    expect(again.duplicate).toBe(true);

    const missing = await cli(["send", join(f.dir, "nope.csv")], f.env, f.dir);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("FILE_READ_FAILED");
  });

  it("tail prints envelopes published after it started, as JSON lines, and stops on SIGINT", async () => {
    if (!f) throw new Error("no fixture");
    const child = guardChild(
      spawn(process.execPath, [CLI, "tail", "--json"], {
        cwd: f.dir,
        env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...f.env },
        stdio: ["ignore", "pipe", "pipe"],
      }),
    );
    let stdout = "";
    let stderr = "";
    child.stdout?.on("data", (c: Buffer) => (stdout += c.toString("utf8")));
    child.stderr?.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
    try {
      await waitFor(() => stderr.includes("tailing files.input"), { message: "tail to start" });
      const body = randomBytes(100);
      const env = inlineEnvelope(body);
      await publish(f.nc, env, body);
      const line = await waitFor(
        () =>
          stdout
            .split("\n")
            .filter((l) => l.trim())
            .map((l) => JSON.parse(l) as { headers: Record<string, string>; valid: boolean; bodyBytes: number })
            .find((l) => l.headers["ce-id"] === env.id),
        { message: "the envelope in tail's output" },
      );
      expect(line).toMatchObject({ valid: true, bodyBytes: 100 });
      child.kill("SIGINT");
      expect(await waitForExit(child, 15_000)).toBe(0);
    } finally {
      child.kill("SIGKILL");
    }
  });
});

import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { AckPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, type Msg } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import { consumerEnv, consumerStarted, makeConsumerDirs, sha256, writeRel } from "../../../test/consumer-support.js";
import { startNats, startNodeProcess, startService, waitFor } from "../../../test/support/index.js";

const entry = fileURLToPath(new URL("../dist/main.js", import.meta.url));

/** The built example (dist/main.js) as a process, with its JSON log lines. */
function startInspectSink(env: Record<string, string>) {
  return startNodeProcess("inspect-sink", entry, { LOG_LEVEL: "info", ...env });
}

describe("examples/inspect-sink", () => {
  it("summarizes a 10,000-line CSV and a JSONL with 2 bad lines on files.summary.<source>; ignores other files", async () => {
    await using nats = await startNats();
    await using dirs = await makeConsumerDirs("inspect-it-");
    await using consumer = startService(
      "consumer",
      consumerEnv(nats.url, dirs, { SOURCE: "crm.eu", SINK_GROUPS: "inspect", LOG_LEVEL: "info" }),
    );
    await consumerStarted(consumer);

    const nc = await connect({ servers: nats.url });
    try {
      const jsm = await jetstreamManager(nc);
      // FILES captures files.> with interest retention: a summary that no durable's filter
      // matches is stored and dropped at once (nats-server 2.9 included).
      nc.publish("files.summary.probe", "{}");
      await nc.flush();
      const before = (await jsm.streams.info("FILES")).state;
      expect(before.messages).toBe(0);
      expect(before.last_seq).toBe(1);
      // A durable filtered to the summaries keeps them until it acks.
      await jsm.consumers.add("FILES", {
        durable_name: "summary-audit",
        filter_subject: "files.summary.>",
        ack_policy: AckPolicy.Explicit,
      });
      const received: Msg[] = [];
      nc.subscribe("files.summary.>", { callback: (_err, m) => void received.push(m) });
      await nc.flush();

      // 10,000 lines (header + 9,999 rows, ~450 KB: an Object Store payload), CRLF endings.
      const rows = Array.from({ length: 9_999 }, (_, i) => `${i},name-${i},"Lyon, FR",${(i * 7) % 1000}.5`);
      const csv = `id,name,"city, country",amount\r\n${rows.join("\r\n")}\r\n`;
      const jsonLines = Array.from({ length: 300 }, (_, i) => JSON.stringify({ i, v: "x".repeat(i % 17) }));
      jsonLines[41] = '{"i": 42, "oops"'; // line 42
      jsonLines[199] = "not json at all"; // line 200
      const jsonl = `${jsonLines.join("\n")}\n`;
      await writeRel(dirs.input, "exports/customers.csv", csv);
      await writeRel(dirs.input, "events.jsonl", jsonl);
      await writeRel(dirs.input, "photo.bin", randomBytes(5000));

      await using sink = startInspectSink({ NATS_URL: nats.url });
      await waitFor(() => sink.logs().filter((l) => l.msg === "file handled").length === 3, {
        timeoutMs: 30_000,
        message: `3 files acked by the inspect sink (${sink.stderr()})`,
      });
      await waitFor(() => received.length >= 2, { message: "2 summaries received" });

      const summaries = received.map((m) => ({ subject: m.subject, body: m.json<Record<string, unknown>>() }));
      const bySubject = new Map(summaries.map((s) => [s.body.subject, s]));
      expect(summaries).toHaveLength(2);
      const csvSummary = bySubject.get("exports/customers.csv");
      expect(csvSummary?.subject).toBe("files.summary.crm_eu");
      expect(csvSummary?.body).toMatchObject({
        format: "csv",
        lines: 10_000,
        columns: 4,
        source: "crm.eu",
        size: Buffer.byteLength(csv),
        sha256: sha256(csv),
      });
      expect(bySubject.get("events.jsonl")?.body).toMatchObject({
        format: "jsonl",
        lines: 300,
        invalidLines: 2,
        invalidLineNumbers: [42, 200],
        size: Buffer.byteLength(jsonl),
        sha256: sha256(jsonl),
      });
      expect(received.every((m) => m.headers?.get("content-type") === "application/json")).toBe(true);
      // The CSV really travelled through the Object Store.
      const published = (path: string) => consumer.logs().find((l) => l.msg === "file published" && l.path === path);
      // The consumer logs after disposing of the source, which can trail the sink's summaries.
      await waitFor(() => published("exports/customers.csv") && published("events.jsonl"), {
        message: "the consumer's published lines",
      });
      expect(published("exports/customers.csv")?.payload).toBe("object");
      expect(published("events.jsonl")?.payload).toBe("inline");

      // The envelopes are acked (gone from FILES); the two summaries wait for summary-audit.
      await waitFor(async () => (await jsm.streams.info("FILES")).state.messages === 2, {
        message: "FILES holds only the 2 summaries",
      });
      const audit = await jetstream(nc).consumers.get("FILES", "summary-audit");
      const stored: string[] = [];
      for await (const m of await audit.fetch({ max_messages: 2, expires: 2000 })) {
        stored.push(m.subject);
        m.ack();
      }
      expect(stored).toEqual(["files.summary.crm_eu", "files.summary.crm_eu"]);
      const inspect = await jsm.consumers.info("FILES", "inspect");
      expect(inspect.num_ack_pending + inspect.num_pending).toBe(0);
      expect(await sink.stop()).toBe(0);
    } finally {
      await nc.close();
    }
  });
});

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { XmlToJson } from "../packages/batcher/src/xml.js";
import {
  batcherEnv,
  eventPublisher,
  httpGet,
  metricSample,
  published,
  readOutputs,
  startBatcher,
  startBatchProducer,
} from "./batcher-support.js";
import { outcomeLines } from "./producer-support.js";
import { freePort, startNats, waitFor } from "./support/index.js";

// events on NATS → batcher → FILES → producer (fs), all real processes (`pnpm build` first).

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "batcher-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const xmlEvent = (i: number) =>
  `<?xml version="1.0" encoding="UTF-8"?>\n<event id="${i}" type="login"><user>u${i}</user><note>a &amp; b</note></event>`;

function parseXmlBatch(text: string): ReturnType<XmlToJson["take"]> {
  const c = new XmlToJson();
  c.write(text.replace(/^<\?xml[^?]*\?>/, ""));
  c.close();
  return c.take();
}

describe("batcher: formats", () => {
  it("wraps 1,000 XML events in one file: one declaration, one <EVENTS> root, 1,000 children; /metrics counts them in and out; an idle interval makes no file", async () => {
    await using nats = await startNats();
    const out = join(root, "out");
    const httpPort = await freePort();
    await using batcher = startBatcher(
      // An interval long enough for 1,000 publishes on a loaded machine: one window.
      batcherEnv(nats.url, join(root, "spool"), {
        BATCH_KEY: "2",
        ROTATION_INTERVAL_MS: "4000",
        HTTP_PORT: String(httpPort),
      }),
    );
    await batcher.waitForLog((l) => l.msg === "batcher started");
    await using producer = startBatchProducer(nats.url, out);
    await using pub = await eventPublisher(nats.url);
    await pub.publishAll(
      "events.acm",
      Array.from({ length: 1000 }, (_, i) => xmlEvent(i)),
    );
    await waitFor(() => outcomeLines(producer).length >= 1, { timeoutMs: 60_000, message: "a batch written" });
    const files = await readOutputs(out);
    expect(files).toHaveLength(1);
    expect(files[0]!.name).toMatch(/^\d{8}_\d{6}_acm(_\d{3})?\.xml$/);
    const text = files[0]!.content.toString("utf8");
    expect(text.match(/<\?xml/g)).toHaveLength(1);
    expect(text.startsWith('<?xml version="1.0" encoding="UTF-8"?>\n<EVENTS>\n')).toBe(true);
    expect(text.match(/<EVENTS>/g)).toHaveLength(1);
    expect(text.trimEnd().endsWith("</EVENTS>")).toBe(true);
    const events = parseXmlBatch(text);
    expect(events).toHaveLength(1000);
    expect(events.map((e) => e["@id"])).toEqual(Array.from({ length: 1000 }, (_, i) => String(i)));
    expect(events[7]).toEqual({ "#name": "event", "@id": "7", "@type": "login", user: "u7", note: "a & b" });

    // What an operator's dashboard reads after that one window.
    await waitFor(() => published(batcher).length >= 1, { timeoutMs: 30_000, message: "the batch logged" });
    const metrics = (await httpGet(httpPort, "/metrics")).text;
    expect(metricSample(metrics, "filerelay_batcher_events_total", { input: "nats" })).toBe(1000);
    expect(metricSample(metrics, "filerelay_batcher_batches_total", { reason: "time" })).toBe(1);
    expect(metricSample(metrics, "filerelay_batcher_events_out_total")).toBe(1000);
    expect(metricSample(metrics, "filerelay_batcher_window_events")).toBe(0);
    expect((await httpGet(httpPort, "/readyz")).status).toBe(200);

    // Two more intervals with no event: still one file (an absence can only be seen by waiting).
    const checksBefore = published(batcher).length;
    await new Promise((r) => setTimeout(r, 8500));
    expect(published(batcher).length).toBe(checksBefore);
    expect(await readOutputs(out)).toHaveLength(1);
    expect(await batcher.stop()).toBe(0);
  });

  it("publishes a window holding a malformed event as …_raw.xml with every byte of the window", async () => {
    await using nats = await startNats();
    const out = join(root, "out");
    await using batcher = startBatcher(batcherEnv(nats.url, join(root, "spool")));
    await batcher.waitForLog((l) => l.msg === "batcher started");
    await using producer = startBatchProducer(nats.url, out);
    await using pub = await eventPublisher(nats.url);
    const events = Array.from({ length: 50 }, (_, i) => xmlEvent(i));
    events[17] = '<?xml version="1.0"?><event id="17"><unclosed></event>';
    await pub.publishAll("events.acm", events, 1);
    await waitFor(() => outcomeLines(producer).length >= 1, { timeoutMs: 60_000, message: "a batch written" });
    const files = await readOutputs(out);
    expect(files.map((f) => f.name)).toEqual([expect.stringMatching(/^\d{8}_\d{6}_raw(_\d{3})?\.xml$/)]);
    expect(files[0]!.content.toString("utf8")).toBe(events.map((e) => `${e}\n`).join(""));
    expect(published(batcher)[0]).toMatchObject({ raw: true, events: 50 });
  });

  it("BATCH_CONVERT=json: the batch is a JSON array of 1,000 objects", async () => {
    await using nats = await startNats();
    const out = join(root, "out");
    await using batcher = startBatcher(
      batcherEnv(nats.url, join(root, "spool"), { BATCH_CONVERT: "json", ROTATION_INTERVAL_MS: "4000" }),
    );
    await batcher.waitForLog((l) => l.msg === "batcher started");
    await using producer = startBatchProducer(nats.url, out);
    await using pub = await eventPublisher(nats.url);
    await pub.publishAll(
      "events.acm",
      Array.from({ length: 1000 }, (_, i) => xmlEvent(i)),
    );
    await waitFor(() => outcomeLines(producer).length >= 1, { timeoutMs: 60_000, message: "a batch written" });
    const files = await readOutputs(out);
    expect(files.map((f) => f.name)).toEqual([expect.stringMatching(/^\d{8}_\d{6}(_\d{3})?\.json$/)]);
    const array = JSON.parse(files[0]!.content.toString("utf8")) as Record<string, unknown>[];
    expect(array).toHaveLength(1000);
    expect(array[999]).toEqual({ "#name": "event", "@id": "999", "@type": "login", user: "u999", note: "a & b" });
  });

  it("jsonl: 1,000 events make 1,000 lines; a 6 MB burst rotates early by size", async () => {
    await using nats = await startNats();
    const out = join(root, "out");
    await using batcher = startBatcher(batcherEnv(nats.url, join(root, "spool"), { BATCH_FORMAT: "jsonl" }));
    await batcher.waitForLog((l) => l.msg === "batcher started");
    await using producer = startBatchProducer(nats.url, out);
    await using pub = await eventPublisher(nats.url);
    await pub.publishAll(
      "events.x",
      Array.from({ length: 1000 }, (_, i) => JSON.stringify({ id: i, text: "small" })),
    );
    await waitFor(() => outcomeLines(producer).length >= 1, { timeoutMs: 60_000, message: "a batch written" });
    const [first] = await readOutputs(out);
    expect(first!.name).toMatch(/\.jsonl$/);
    const lines = first!.content.toString("utf8").split("\n");
    expect(lines.pop()).toBe("");
    expect(lines).toHaveLength(1000);
    expect(lines.map((l) => (JSON.parse(l) as { id: number }).id)).toEqual(Array.from({ length: 1000 }, (_, i) => i));

    // 6,000 events of 1,000 bytes: more than MAX_BATCH_BYTES (5 MiB) at once.
    const pad = "x".repeat(1000 - JSON.stringify({ id: 100000, p: "" }).length);
    const burst = Array.from({ length: 6000 }, (_, i) => JSON.stringify({ id: 100000 + i, p: pad }));
    await pub.publishAll("events.x", burst);
    await waitFor(() => outcomeLines(producer).length >= 3, { timeoutMs: 90_000, message: "the burst's batches" });
    const burstBatches = published(batcher).slice(1);
    expect(burstBatches[0]).toMatchObject({ reason: "size" });
    expect(burstBatches.reduce((n, l) => n + Number(l.events), 0)).toBe(6000);
    for (const b of burstBatches) expect(Number(b.eventBytes)).toBeLessThanOrEqual(5 * 1024 * 1024);
    const ids = (await readOutputs(out))
      .filter((f) => f.name !== first!.name)
      .flatMap((f) => f.content.toString("utf8").trimEnd().split("\n"))
      .map((l) => (JSON.parse(l) as { id: number }).id);
    expect(ids.sort((a, b) => a - b)).toEqual(Array.from({ length: 6000 }, (_, i) => 100000 + i));
  });
});

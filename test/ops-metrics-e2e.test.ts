import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { freePort, sha256File, startNats, startService, waitFor, walkFiles, writeSeededFile } from "./support/index.js";
import { outcomeLines, producerEnv } from "./producer-support.js";

// Issue 8, "Done when": /healthz, /readyz transitions and /metrics values of the
// real services (built: `pnpm build` first) after relaying N files.

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "ops-metrics-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

interface Reply {
  status: number;
  text: string;
}

async function get(port: number, path: string): Promise<Reply> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, text: await res.text() };
}

/** One sample's value from Prometheus text, whatever the label order (labels not named are ignored). */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = new Map([...(m[2] ?? "").matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) return Number(m[3]);
  }
  return undefined;
}

const N = 25;
const INLINE_MAX_BYTES = 262_144;

describe("operations: metrics and probes of the running services", () => {
  it("counts N relayed files on both sides, probes answer, and the consumer's /readyz follows the broker", async () => {
    await using nats = await startNats();
    const input = join(root, "input");
    const out = join(root, "output");
    await mkdir(input, { recursive: true });
    const cport = await freePort();
    const pport = await freePort();

    await using consumer = startService("consumer", {
      NATS_URL: nats.url,
      INPUT_DIR: input,
      ARCHIVE_DIR: join(root, "archive"),
      ERROR_DIR: join(root, "consumer-error"),
      SOURCE: "api",
      STABILITY_MS: "200",
      POLL_INTERVAL_MS: "500",
      LOG_LEVEL: "info",
      HTTP_PORT: String(cport),
    });
    await consumer.waitForLog((l) => l.msg === "consumer started", 60_000, "consumer started");
    await using producer = startService(
      "producer",
      producerEnv(nats.url, { OUTPUT_DIR: out, LOG_LEVEL: "info", HTTP_PORT: String(pport) }),
    );
    await producer.waitForLog((l) => l.msg === "consuming files", 60_000, "producer ready");

    for (const port of [cport, pport]) {
      expect((await get(port, "/healthz")).status).toBe(200);
      await waitFor(async () => (await get(port, "/readyz")).status === 200, {
        timeoutMs: 30_000,
        message: `/readyz on ${port} to answer 200`,
      });
    }

    // N files, every 8th above INLINE_MAX_BYTES (so through the Object Store); written
    // under a skipped temp name and renamed, so the consumer only sees complete files.
    const shas = new Set<string>();
    let totalBytes = 0;
    let large = 0;
    for (let i = 0; i < N; i++) {
      const size = i % 8 === 3 ? INLINE_MAX_BYTES + 10_000 + i : 500 + i * 97;
      if (size > INLINE_MAX_BYTES) large++;
      totalBytes += size;
      shas.add(
        await writeSeededFile(join(input, `m-${i}.bin`), `ops-metrics-${i}`, size, { via: join(input, `m-${i}.tmp`) }),
      );
    }
    expect(large).toBeGreaterThanOrEqual(3);

    await waitFor(() => outcomeLines(producer).length >= N, {
      timeoutMs: 60_000,
      message: `${N} files written (have ${outcomeLines(producer).length})`,
    });
    const written = await walkFiles(out);
    expect(written).toHaveLength(N);
    expect(new Set(await Promise.all(written.map((p) => sha256File(join(out, p)))))).toEqual(shas);

    // The metrics are updated right after the log lines (the producer's after the ack): wait for them to settle.
    const consumerMetrics = await waitFor(
      async () => {
        const t = (await get(cport, "/metrics")).text;
        return sample(t, "filerelay_files_total", { service: "consumer", source: "api", outcome: "published" }) === N &&
          sample(t, "filerelay_files_in_flight", { service: "consumer" }) === 0
          ? t
          : undefined;
      },
      { timeoutMs: 30_000, message: `consumer metrics: ${N} published, none in flight` },
    );
    const producerMetrics = await waitFor(
      async () => {
        const t = (await get(pport, "/metrics")).text;
        return sample(t, "filerelay_files_total", {
          service: "producer",
          group: "file-producers",
          outcome: "written",
        }) === N && sample(t, "filerelay_files_in_flight", { service: "producer" }) === 0
          ? t
          : undefined;
      },
      { timeoutMs: 30_000, message: `producer metrics: ${N} written, none in flight` },
    );

    const c = (name: string, labels: Record<string, string> = {}) =>
      sample(consumerMetrics, name, { service: "consumer", ...labels });
    const p = (name: string, labels: Record<string, string> = {}) =>
      sample(producerMetrics, name, { service: "producer", ...labels });

    expect(c("filerelay_files_total", { source: "api", outcome: "published" })).toBe(N);
    expect(c("filerelay_bytes_total", { source: "api", outcome: "published" })).toBe(totalBytes);
    expect(c("filerelay_publish_duration_seconds_count", { source: "api" })).toBe(N);
    expect(c("filerelay_files_in_flight")).toBe(0);
    expect(c("filerelay_nats_connected")).toBe(1);
    expect(c("filerelay_pending_files")).toBeDefined();
    // No failure of any kind was counted.
    expect(c("filerelay_files_total", { source: "api", outcome: "failed" }) ?? 0).toBe(0);

    expect(p("filerelay_files_total", { group: "file-producers", outcome: "written" })).toBe(N);
    expect(p("filerelay_bytes_total", { group: "file-producers", outcome: "written" })).toBe(totalBytes);
    expect(p("filerelay_write_duration_seconds_count", { group: "file-producers" })).toBe(N);
    expect(p("filerelay_end_to_end_latency_seconds_count", { group: "file-producers" })).toBe(N);
    expect(p("filerelay_files_in_flight")).toBe(0);
    expect(p("filerelay_nats_connected")).toBe(1);
    expect(p("filerelay_files_total", { group: "file-producers", outcome: "dead_lettered" }) ?? 0).toBe(0);
    // The default Node process metrics are there too, with the service label.
    expect(p("process_cpu_user_seconds_total")).toBeGreaterThan(0);

    // Broker down: the consumer is not ready (503 + JSON reason) but still alive.
    await nats.kill();
    const down = await waitFor(
      async () => {
        const r = await get(cport, "/readyz");
        return r.status === 503 ? r : undefined;
      },
      { timeoutMs: 30_000, message: "consumer /readyz to answer 503 with the broker down" },
    );
    const body = JSON.parse(down.text) as { status?: string; reason?: string };
    expect(body.status).toBe("unavailable");
    expect(body.reason).toMatch(/NATS|JetStream/);
    expect((await get(cport, "/healthz")).status).toBe(200);
    await waitFor(
      async () =>
        sample((await get(cport, "/metrics")).text, "filerelay_nats_connected", { service: "consumer" }) === 0,
      { timeoutMs: 30_000, message: "consumer filerelay_nats_connected to drop to 0" },
    );

    await nats.restart();
    await waitFor(async () => (await get(cport, "/readyz")).status === 200, {
      timeoutMs: 60_000,
      message: "consumer /readyz to answer 200 after the broker came back",
    });
    await waitFor(async () => (await get(pport, "/readyz")).status === 200, {
      timeoutMs: 60_000,
      message: "producer /readyz to answer 200 after the broker came back",
    });
    const after = (await get(cport, "/metrics")).text;
    expect(sample(after, "filerelay_nats_connected", { service: "consumer" })).toBe(1);
    expect(sample(after, "filerelay_nats_reconnects_total", { service: "consumer" })).toBeGreaterThanOrEqual(1);

    expect(await producer.stop()).toBe(0);
    expect(await consumer.stop()).toBe(0);
  }, 90_000);
});

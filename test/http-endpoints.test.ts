import { describe, expect, it } from "vitest";
import {
  connectNats,
  createMetrics,
  natsReadiness,
  silentLogger,
  startHttpServer,
  watchNatsConnection,
  ConfigError,
} from "@filerelay/core/internal";
import { startNats, waitFor } from "./support/index.js";

const log = silentLogger();

async function get(port: number, path: string): Promise<{ status: number; type: string; text: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, type: res.headers.get("content-type") ?? "", text: await res.text() };
}

/** One sample's value from Prometheus text, whatever the label order. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = new Map([...(m[2] ?? "").matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) return Number(m[3]);
  }
  return undefined;
}

describe("HTTP endpoints", () => {
  it("/readyz follows the broker: 200, 503 with a reason while it is down, 200 again; metrics track the connection", async () => {
    await using nats = await startNats();
    const nc = await connectNats({ NATS_URL: [nats.url] }, { name: "http-test", log });
    try {
      await using metrics = createMetrics("producer");
      await using _watch = watchNatsConnection(nc, metrics);
      await using http = await startHttpServer({
        port: 0,
        host: "127.0.0.1",
        log,
        metrics,
        ready: () => natsReadiness(nc, undefined, 500),
        readyTimeoutMs: 2000,
      });

      expect(await get(http.port, "/healthz")).toMatchObject({ status: 200 });
      const ready = await get(http.port, "/readyz");
      expect(ready.status).toBe(200);
      expect(JSON.parse(ready.text)).toEqual({ status: "ok" });
      expect(sample((await get(http.port, "/metrics")).text, "filerelay_nats_connected")).toBe(1);

      await nats.kill();
      const down = await waitFor(
        async () => {
          const r = await get(http.port, "/readyz");
          return r.status === 503 ? r : undefined;
        },
        { timeoutMs: 15_000, message: "/readyz to answer 503 with the broker down" },
      );
      const body = JSON.parse(down.text) as { status: string; reason: string };
      expect(body.status).toBe("unavailable");
      expect(body.reason).toMatch(/JetStream is not reachable/);
      // Liveness does not depend on the broker: restarting the pod would not help.
      expect((await get(http.port, "/healthz")).status).toBe(200);
      expect(sample((await get(http.port, "/metrics")).text, "filerelay_nats_connected")).toBe(0);

      await nats.restart();
      await waitFor(async () => (await get(http.port, "/readyz")).status === 200, {
        timeoutMs: 30_000,
        message: "/readyz to answer 200 after the broker came back",
      });
      const text = (await get(http.port, "/metrics")).text;
      expect(sample(text, "filerelay_nats_connected")).toBe(1);
      expect(sample(text, "filerelay_nats_reconnects_total")).toBe(1);
    } finally {
      await nc.close();
    }
  });

  it("/readyz times out a hanging check, and reports a closed connection", async () => {
    await using nats = await startNats();
    const nc = await connectNats({ NATS_URL: [nats.url] }, { name: "http-test", log });
    let check: () => Promise<void> = () => new Promise<void>(() => undefined);
    await using metrics = createMetrics("consumer");
    await using http = await startHttpServer({
      port: 0,
      host: "127.0.0.1",
      log,
      metrics,
      ready: () => check(),
      readyTimeoutMs: 200,
    });

    const hung = await get(http.port, "/readyz");
    expect(hung.status).toBe(503);
    expect(JSON.parse(hung.text)).toEqual({ status: "unavailable", reason: "readiness check timed out after 200 ms" });

    check = () => natsReadiness(nc);
    expect((await get(http.port, "/readyz")).status).toBe(200);
    await nc.close();
    const closed = await get(http.port, "/readyz");
    expect(closed.status).toBe(503);
    expect(JSON.parse(closed.text)).toMatchObject({ reason: "NATS connection is closed" });
  });

  it("/metrics serves Prometheus text with the values recorded; unknown paths 404, other methods 405", async () => {
    await using metrics = createMetrics("consumer");
    await using http = await startHttpServer({
      port: 0,
      host: "127.0.0.1",
      log,
      metrics,
      ready: () => Promise.resolve(),
    });
    const n = 5;
    for (let i = 0; i < n; i++)
      metrics.fileOutcome({ outcome: "published", source: "api", bytes: 1000, durationMs: 3 });
    metrics.pendingFiles.set(4);

    const res = await get(http.port, "/metrics");
    expect(res.status).toBe(200);
    expect(res.type).toBe("text/plain; version=0.0.4; charset=utf-8");
    expect(
      sample(res.text, "filerelay_files_total", { source: "api", outcome: "published", service: "consumer" }),
    ).toBe(n);
    expect(sample(res.text, "filerelay_bytes_total", { source: "api", outcome: "published" })).toBe(n * 1000);
    expect(sample(res.text, "filerelay_publish_duration_seconds_count", { source: "api" })).toBe(n);
    expect(sample(res.text, "filerelay_pending_files")).toBe(4);
    for (const name of [
      "filerelay_files_in_flight",
      "filerelay_nats_connected",
      "filerelay_nats_reconnects_total",
      "process_resident_memory_bytes",
    ]) {
      expect(res.text).toContain(`# TYPE ${name} `);
    }

    const missing = await get(http.port, "/nope");
    expect(missing.status).toBe(404);
    expect(missing.type).toMatch(/^application\/json/);
    const post = await fetch(`http://127.0.0.1:${http.port}/metrics`, { method: "POST" });
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET, HEAD");
    await post.body?.cancel();
  });

  it("/healthz answers 503 after the event loop stalled, and 200 again once the stall leaves the window", async () => {
    await using metrics = createMetrics("consumer");
    await using http = await startHttpServer({
      port: 0,
      host: "127.0.0.1",
      log,
      metrics,
      ready: () => Promise.resolve(),
      maxEventLoopLagMs: 100,
      lagWindowMs: 1500,
      lagSampleMs: 20,
    });
    expect((await get(http.port, "/healthz")).status).toBe(200);

    // A synchronous stall like a runaway computation would cause.
    const until = performance.now() + 300;
    while (performance.now() < until) {
      /* block the loop */
    }
    const sick = await get(http.port, "/healthz");
    expect(sick.status).toBe(503);
    expect((JSON.parse(sick.text) as { reason: string }).reason).toMatch(/^event loop lag \d+ ms exceeds 100 ms$/);

    await waitFor(async () => (await get(http.port, "/healthz")).status === 200, {
      timeoutMs: 10_000,
      message: "/healthz to recover once the stall is older than the window",
    });
  });

  it("a port already in use is a configuration error naming HTTP_PORT", async () => {
    await using metrics = createMetrics("producer");
    await using first = await startHttpServer({
      port: 0,
      host: "127.0.0.1",
      log,
      metrics,
      ready: () => Promise.resolve(),
    });
    const second = startHttpServer({
      port: first.port,
      host: "127.0.0.1",
      log,
      metrics,
      ready: () => Promise.resolve(),
    });
    await expect(second).rejects.toBeInstanceOf(ConfigError);
    await expect(second).rejects.toThrow(/HTTP_PORT: cannot listen on 127\.0\.0\.1:\d+: .*EADDRINUSE/);
  });
});

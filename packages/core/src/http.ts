import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { performance } from "node:perf_hooks";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { ConfigError, describeError, NatsError } from "./errors.js";
import type { Logger } from "./logger.js";
import type { Registry } from "prom-client";

export interface HttpServerOptions {
  /** HTTP_PORT; 0 picks a free port (tests). A service with HTTP_PORT=0 should not start the server at all. */
  port: number;
  host?: string;
  log: Logger;
  /** The service's metrics (anything with a prom-client registry). */
  metrics: { registry: Registry };
  /** Resolves when the service can do its work; throws with the reason otherwise. */
  ready: () => Promise<void>;
  /** /readyz answers 503 when ready() takes longer than this (default 5000 ms). */
  readyTimeoutMs?: number;
  /** /healthz answers 503 when the event loop lagged more than this (default 5000 ms)... */
  maxEventLoopLagMs?: number;
  /** ...at any time within this window (default 10 000 ms, about one liveness probe period). */
  lagWindowMs?: number;
  /** How often the event loop is sampled (default 500 ms). */
  lagSampleMs?: number;
}

export interface HttpServer extends AsyncDisposable {
  /** The port actually bound (the chosen one for port 0). */
  port: number;
  close(): Promise<void>;
}

/**
 * Serves /healthz (liveness: the event loop is not stuck), /readyz (readiness:
 * whatever `ready()` checks) and /metrics (Prometheus text) on node:http.
 * Resolves once listening; a port that cannot be bound is a configuration
 * problem (HTTP_PORT), reported as a ConfigError.
 */
export async function startHttpServer(options: HttpServerOptions): Promise<HttpServer> {
  const { port, host = "0.0.0.0", log, metrics, ready } = options;
  const readyTimeoutMs = options.readyTimeoutMs ?? 5000;
  const lag = monitorLag({
    maxLagMs: options.maxEventLoopLagMs ?? 5000,
    windowMs: options.lagWindowMs ?? 10_000,
    sampleMs: options.lagSampleMs ?? 500,
  });

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = new URL(req.url ?? "/", "http://localhost").pathname;
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("allow", "GET, HEAD");
      return sendJson(res, 405, { status: "method not allowed" });
    }
    switch (path) {
      case "/healthz": {
        const worst = lag.worstLagMs();
        if (worst > lag.maxLagMs) {
          return sendJson(res, 503, {
            status: "unhealthy",
            reason: `event loop lag ${Math.round(worst)} ms exceeds ${lag.maxLagMs} ms`,
          });
        }
        return sendJson(res, 200, { status: "ok" });
      }
      case "/readyz":
        try {
          await withTimeout(ready(), readyTimeoutMs, `readiness check timed out after ${readyTimeoutMs} ms`);
          return sendJson(res, 200, { status: "ok" });
        } catch (err) {
          const reason = describeError(err);
          log.debug({ reason }, "not ready");
          return sendJson(res, 503, { status: "unavailable", reason });
        }
      case "/metrics": {
        const body = await metrics.registry.metrics();
        res.writeHead(200, { "content-type": metrics.registry.contentType });
        res.end(body);
        return;
      }
      default:
        return sendJson(res, 404, { status: "not found", paths: ["/healthz", "/readyz", "/metrics"] });
    }
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      log.error({ err, url: req.url }, "HTTP handler failed");
      if (!res.headersSent) sendJson(res, 500, { status: "error", reason: describeError(err) });
      else res.destroy();
    });
  });
  // Probes are short; an idle keep-alive socket must not hold close() up.
  server.keepAliveTimeout = 5000;

  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (err) {
    lag.stop();
    throw new ConfigError([`HTTP_PORT: cannot listen on ${host}:${port}: ${describeError(err)}`], { cause: err });
  }
  server.on("error", (err) => log.error({ err }, "HTTP server error"));
  const actualPort = (server.address() as AddressInfo).port;
  log.info({ host, port: actualPort }, "serving /healthz, /readyz and /metrics");

  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= new Promise<void>((resolve) => {
      lag.stop();
      server.close(() => resolve());
      server.closeIdleConnections();
    });
    return closing;
  };
  return { port: actualPort, close, [Symbol.asyncDispose]: close };
}

function sendJson(res: ServerResponse, status: number, body: Record<string, unknown>): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" });
  res.end(text);
}

interface LagMonitor {
  maxLagMs: number;
  /** Largest lag seen in the window, including a stall in progress. */
  worstLagMs(): number;
  stop(): void;
}

/**
 * A timer that should fire every `sampleMs`; how late it fires is the loop's
 * lag. Kept as recent samples rather than a running histogram so that one stall
 * fails liveness only for `windowMs` instead of forever.
 */
function monitorLag(opts: { maxLagMs: number; windowMs: number; sampleMs: number }): LagMonitor {
  const samples: { at: number; lag: number }[] = [];
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    samples.push({ at: now, lag: Math.max(0, now - last - opts.sampleMs) });
    last = now;
    while (samples.length > 0 && samples[0]!.at < now - opts.windowMs) samples.shift();
  }, opts.sampleMs);
  timer.unref();
  return {
    maxLagMs: opts.maxLagMs,
    worstLagMs() {
      const now = performance.now();
      let worst = Math.max(0, now - last - opts.sampleMs);
      for (const s of samples) if (s.at >= now - opts.windowMs && s.lag > worst) worst = s.lag;
      return worst;
    },
    stop: () => clearInterval(timer),
  };
}

/** Rejects with `message` when `p` has not settled within `ms` (p itself is not cancelled). */
export function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Readiness of the NATS side: throws a NatsError unless the connection is open
 * and JetStream answers an account-info request within `timeoutMs`. Services
 * combine it with their own checks (INPUT_DIR readable, OUTPUT_DIR writable,
 * S3 bucket reachable).
 */
export async function natsReadiness(nc: NatsConnection, jsm?: JetStreamManager, timeoutMs = 2000): Promise<void> {
  if (nc.isClosed()) throw new NatsError("NATS_CONNECT_FAILED", "NATS connection is closed");
  try {
    const manager = jsm ?? (await jetstreamManager(nc, { timeout: timeoutMs, checkAPI: false }));
    await withTimeout(manager.getAccountInfo(), timeoutMs, `no answer within ${timeoutMs} ms`);
  } catch (err) {
    throw new NatsError("NATS_CONNECT_FAILED", "JetStream is not reachable", { cause: err });
  }
}

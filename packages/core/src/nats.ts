import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import {
  connect,
  credsAuthenticator,
  nkeyAuthenticator,
  type NatsConnection,
  type NodeConnectionOptions,
} from "@nats-io/transport-node";
import { NatsError } from "./errors.js";
import type { Logger } from "./logger.js";
import { backoffDelay } from "./backoff.js";
import { redactUrl } from "./config.js";

export type { NatsConnection } from "@nats-io/transport-node";

export interface NatsConfig {
  NATS_URL: readonly string[];
  NATS_CREDS?: string | undefined;
  NATS_TOKEN?: string | undefined;
  NATS_USER?: string | undefined;
  NATS_PASSWORD?: string | undefined;
  NATS_NKEY_SEED_FILE?: string | undefined;
  NATS_TLS_CA?: string | undefined;
  NATS_TLS_CERT?: string | undefined;
  NATS_TLS_KEY?: string | undefined;
}

export interface ConnectNatsOptions {
  /** Connection name shown by the server (`nats server report connections`). */
  name: string;
  log: Logger;
  signal?: AbortSignal;
  /**
   * How many failed initial connection attempts before giving up (default:
   * keep trying, because a service may start before its broker). Auth failures
   * give up after 3 attempts regardless: retrying a wrong password only fills logs.
   */
  maxInitialAttempts?: number;
}

/** Builds nats.js options from the common configuration (no I/O except reading key files). */
export function natsConnectionOptions(config: NatsConfig, name: string): NodeConnectionOptions {
  const opts: NodeConnectionOptions = {
    servers: [...config.NATS_URL],
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 1000,
    reconnectJitter: 500,
    pingInterval: 10_000,
    maxPingOut: 3,
    timeout: 5000,
    // No Error() captured per request/publish for async stack traces: ~10% of
    // the consumer's CPU per small file (profiled); errors still carry messages.
    noAsyncTraces: true,
  };
  if (config.NATS_TOKEN) opts.token = config.NATS_TOKEN;
  if (config.NATS_USER) {
    opts.user = config.NATS_USER;
    if (config.NATS_PASSWORD) opts.pass = config.NATS_PASSWORD;
  }
  const authenticators = [];
  if (config.NATS_CREDS) authenticators.push(credsAuthenticator(readKeyFile(config.NATS_CREDS, "NATS_CREDS")));
  if (config.NATS_NKEY_SEED_FILE) {
    const seed = new TextDecoder().decode(readKeyFile(config.NATS_NKEY_SEED_FILE, "NATS_NKEY_SEED_FILE")).trim();
    authenticators.push(nkeyAuthenticator(new TextEncoder().encode(seed)));
  }
  if (authenticators.length > 0) opts.authenticator = authenticators;
  if (config.NATS_TLS_CA || config.NATS_TLS_CERT || config.NATS_TLS_KEY) {
    opts.tls = {
      ...(config.NATS_TLS_CA ? { caFile: config.NATS_TLS_CA } : {}),
      ...(config.NATS_TLS_CERT ? { certFile: config.NATS_TLS_CERT } : {}),
      ...(config.NATS_TLS_KEY ? { keyFile: config.NATS_TLS_KEY } : {}),
    };
  }
  return opts;
}

function readKeyFile(path: string, variable: string): Uint8Array {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new NatsError("NATS_AUTH_FAILED", `cannot read ${variable} file ${path}`, { cause: err });
  }
}

function isAuthError(err: unknown): boolean {
  const text = String((err as Error | undefined)?.message ?? err).toLowerCase();
  return text.includes("authorization") || text.includes("authentication") || text.includes("auth");
}

/**
 * Connects with infinite reconnects and logs every disconnect/reconnect. The
 * initial connection is retried with backoff (the broker may come up after us);
 * a credential problem fails fast with one clear error naming the server.
 */
export async function connectNats(config: NatsConfig, options: ConnectNatsOptions): Promise<NatsConnection> {
  const { log, signal, name } = options;
  const servers = config.NATS_URL.map(redactUrl).join(",");
  const maxAttempts = options.maxInitialAttempts ?? Number.POSITIVE_INFINITY;
  const connOpts = natsConnectionOptions(config, name);
  let authFailures = 0;
  for (let attempt = 1; ; attempt++) {
    signal?.throwIfAborted();
    try {
      const nc = await connect(connOpts);
      log.info({ server: nc.getServer(), name }, "connected to NATS");
      watchStatus(nc, log);
      return nc;
    } catch (err) {
      const auth = isAuthError(err);
      if (auth) authFailures++;
      const message = (err as Error).message;
      if ((auth && authFailures >= 3) || attempt >= maxAttempts) {
        throw new NatsError(
          auth ? "NATS_AUTH_FAILED" : "NATS_CONNECT_FAILED",
          auth
            ? `NATS server ${servers} rejected our credentials: ${message}. Check NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_CREDS or NATS_NKEY_SEED_FILE.`
            : `cannot connect to NATS at ${servers} after ${attempt} attempt${attempt === 1 ? "" : "s"}: ${message}`,
          { cause: err, details: { servers, attempts: attempt } },
        );
      }
      const delay = backoffDelay(Math.min(attempt - 1, 4), { baseMs: 500, maxMs: 8000, jitter: 0.3 });
      log.warn({ servers, attempt, retryInMs: delay, err: message }, "NATS not reachable yet, retrying");
      await sleep(delay, undefined, { signal });
    }
  }
}

function watchStatus(nc: NatsConnection, log: Logger): void {
  void (async () => {
    for await (const s of nc.status()) {
      switch (s.type) {
        case "disconnect":
          log.warn({ server: s.server }, "disconnected from NATS; reconnecting");
          break;
        case "reconnect":
          log.info({ server: s.server }, "reconnected to NATS");
          break;
        case "error":
          log.error({ err: s.error.message }, "NATS error");
          break;
        case "ldm":
          log.warn({ server: s.server }, "NATS server entering lame-duck mode");
          break;
        default:
          log.debug({ status: s.type }, "NATS status");
      }
    }
  })().catch(() => undefined);
}

import { readFile } from "node:fs/promises";
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import fastifyMultipart from "@fastify/multipart";
import fastifyRateLimit from "@fastify/rate-limit";
import fastifySwagger from "@fastify/swagger";
import fastifySwaggerUi from "@fastify/swagger-ui";
import fastifyWebsocket from "@fastify/websocket";
import { jsonSchemaTransform, serializerCompiler, validatorCompiler } from "fastify-type-provider-zod";
import { describeError, type Logger } from "@filerelay/core";
import { authorize, bearerToken, sha256Hex, type ApiKeys, type Principal, type Role } from "./apiKeys.js";
import type { GatewayConfig } from "./config.js";
import { errorReply, HttpError } from "./httpError.js";
import type { GatewayMetrics } from "./metrics.js";

declare module "fastify" {
  interface FastifyRequest {
    /** The caller, on routes that need a role. */
    principal?: Principal;
  }
  interface FastifyContextConfig {
    /** The least role a route needs (none: open, like /healthz). */
    role?: Role;
  }
}

export interface ServerOptions {
  config: GatewayConfig;
  keys: ApiKeys;
  metrics: GatewayMetrics;
  log: Logger;
  /** Throws with the reason while the gateway cannot take uploads. */
  ready: () => Promise<void>;
  version: string;
}

/**
 * The Fastify instance with everything every route shares: TLS, JSON errors
 * `{error, code}` without stack traces, API-key roles, the rate limit,
 * multipart limits, raw-body parsers for chunk and tus bodies, request
 * metrics, OpenAPI at /docs, and the operations endpoints. Routes are added by
 * the caller before `listen`.
 */
export async function buildServer(options: ServerOptions): Promise<FastifyInstance> {
  const { config, keys, metrics, log } = options;
  const https =
    config.HTTP_TLS_CERT && config.HTTP_TLS_KEY
      ? { cert: await readFile(config.HTTP_TLS_CERT), key: await readFile(config.HTTP_TLS_KEY) }
      : null;
  const httpLog: FastifyBaseLogger = log.child({ component: "http" });
  const app = Fastify({
    loggerInstance: httpLog,
    disableRequestLogging: true,
    // Uploads stream for as long as they need; idle sockets are still reaped.
    requestTimeout: 0,
    connectionTimeout: 0,
    keepAliveTimeout: 65_000,
    bodyLimit: 1024 * 1024,
    return503OnClosing: true,
    forceCloseConnections: "idle",
    ...(https ? { https } : {}),
  });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);

  app.setErrorHandler(async (err, request, reply) => {
    const { status, body } = errorReply(validationError(err) ?? err);
    if (status >= 500) request.log.error({ err: describeError(err), url: request.url }, "request failed");
    else request.log.debug({ status, code: body.code, reason: body.error, url: request.url }, "request refused");
    await settleBody(request.raw, reply);
    return reply.code(status).send(body);
  });
  app.setNotFoundHandler((request, reply) =>
    reply.code(404).send({ error: `no route ${request.method} ${request.url.split("?")[0]}`, code: "NOT_FOUND" }),
  );

  // Chunk and tus bodies are streamed by their handlers from request.raw.
  for (const type of ["application/octet-stream", "application/offset+octet-stream"]) {
    app.addContentTypeParser(type, (_request, _payload, done) => done(null));
  }

  await app.register(fastifyRateLimit, {
    global: true,
    max: config.RATE_LIMIT_PER_MINUTE > 0 ? config.RATE_LIMIT_PER_MINUTE : Number.MAX_SAFE_INTEGER,
    timeWindow: 60_000,
    // Per key (hashed, never kept in clear); callers without one share their address's bucket.
    keyGenerator: (request) => {
      const token = bearerToken(request.headers.authorization);
      return token ? `key:${sha256Hex(token)}` : `ip:${request.ip}`;
    },
    errorResponseBuilder: (_request, context) =>
      new HttpError(429, "RATE_LIMITED", `rate limit of ${context.max} requests per minute exceeded`),
  });

  await app.register(fastifyMultipart, {
    limits: {
      // One byte over the limit lets the gateway's own counter answer 413.
      fileSize: config.MAX_UPLOAD_SIZE + 1,
      // Files up to INLINE_MAX_BYTES wait in memory until the whole request is read: this bounds them.
      files: 100,
      fields: 1000,
      fieldSize: 64 * 1024,
      parts: 2000,
      headerPairs: 200,
    },
    throwFileSizeLimit: false,
  });
  await app.register(fastifyWebsocket, { options: { maxPayload: 64 * 1024 } });

  await app.register(fastifySwagger, {
    openapi: {
      info: {
        title: "filerelay gateway",
        description: "Upload files to filerelay over HTTP",
        version: options.version,
      },
      components: { securitySchemes: { bearer: { type: "http", scheme: "bearer" } } },
      security: [{ bearer: [] }],
    },
    transform: jsonSchemaTransform,
  });
  await app.register(fastifySwaggerUi, { routePrefix: "/docs" });

  app.addHook("onRequest", (request, _reply, done) => {
    const role = request.routeOptions.config.role;
    try {
      if (role) request.principal = authorize(keys, request.headers.authorization, role);
      done();
    } catch (err) {
      done(err as Error);
    }
  });
  app.addHook("onResponse", async (request, reply) => {
    const route = request.routeOptions.url ?? "unmatched";
    metrics.requests.inc({ route, method: request.method, status: String(reply.statusCode) });
    metrics.requestSeconds.observe({ route, method: request.method }, reply.elapsedTime / 1000);
  });

  registerOpsRoutes(app, options);
  return app;
}

/** Bodies up to this size are read and dropped before a refusal, so the connection stays usable. */
const DRAIN_LIMIT_BYTES = 1024 * 1024;

/**
 * Before refusing a request whose body is still unread: a small one is read
 * to its end (a client still sending would otherwise see a reset instead of
 * the answer); a large or unknown-length one closes the connection after the
 * answer rather than streaming gigabytes nobody reads.
 */
async function settleBody(raw: FastifyRequest["raw"], reply: FastifyReply): Promise<void> {
  if (raw.complete || raw.readableEnded || raw.destroyed) return;
  const length = Number(raw.headers["content-length"] ?? NaN);
  if (!(length <= DRAIN_LIMIT_BYTES)) {
    void reply.header("connection", "close");
    return;
  }
  await new Promise<void>((resolve) => {
    raw.on("end", resolve).on("error", resolve).on("close", resolve);
    raw.resume();
  });
}

function registerOpsRoutes(app: FastifyInstance, options: ServerOptions): void {
  const open = { config: { rateLimit: false as const }, schema: { hide: true } };
  const ok = { status: "ok" };
  app.get("/health", open, (_request, reply) => reply.send(ok));
  app.get("/healthz", open, (_request, reply) => reply.send(ok));
  app.get("/readyz", open, async (_request, reply) => {
    try {
      await options.ready();
      return ok;
    } catch (err) {
      return reply.code(503).send({ status: "unavailable", reason: describeError(err) });
    }
  });
  app.get("/metrics", open, async (_request, reply) => {
    const text = await options.metrics.registry.metrics();
    return reply.type(options.metrics.registry.contentType).send(text);
  });
}

/** Schema validation failures (zod via the type provider) are 400 REQUEST_INVALID with the issues. */
function validationError(err: unknown): HttpError | undefined {
  const e = err as { validation?: unknown; message?: unknown; code?: unknown };
  if (e.validation === undefined) return undefined;
  return new HttpError(400, "REQUEST_INVALID", typeof e.message === "string" ? e.message : "invalid request");
}

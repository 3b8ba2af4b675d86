import { randomUUID } from "node:crypto";
import type { FastifyInstance } from "fastify";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { z } from "zod";
import { headers as natsHeaders } from "@nats-io/nats-core";
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import {
  checkObjectPayload,
  describeError,
  jetstreamNames,
  parseEnvelope,
  type Envelope,
  type FileRecord,
  type Logger,
  type NatsConnection,
  type StatusLedger,
} from "@filerelay/core";
import { authorize, bearerToken, type ApiKeys } from "../apiKeys.js";
import type { GatewayConfig } from "../config.js";
import { HttpError } from "../httpError.js";
import type { GatewayMetrics } from "../metrics.js";
import { fileIdParams } from "../schemas.js";

const FILE_STATES = ["received", "published", "delivered", "failed", "error"] as const;

export const listQuerySchema = z.object({
  state: z.enum(FILE_STATES).optional(),
  source: z.string().min(1).optional(),
  job: z.string().min(1).optional(),
  since: z.iso.datetime({ offset: true }).optional().describe("RFC 3339: records updated at or after"),
  limit: z.coerce.number().int().min(1).max(1000).optional(),
});

export interface StatusDeps {
  config: GatewayConfig;
  nc: NatsConnection;
  keys: ApiKeys;
  status: StatusLedger | undefined;
  metrics: GatewayMetrics;
  log: Logger;
}

/** What /status and /ws tell about one file. */
export function fileProgress(r: FileRecord) {
  const total = r.progress.total ?? r.size;
  const bytes = r.progress.bytes;
  return {
    file_id: r.id,
    state: r.state,
    progress: total ? Math.min(1, bytes / total) : r.state === "received" ? null : 1,
    bytes,
    total: total ?? null,
    updated_at: r.updatedAt,
  };
}

function locations(r: FileRecord) {
  return Object.fromEntries(
    Object.entries(r.deliveries).map(([group, d]) => [
      group,
      { state: d.state, location: d.location ?? null, ...(d.code ? { code: d.code } : {}) },
    ]),
  );
}

/**
 * The status ledger over HTTP (DESIGN §8, §9): list, one record, its state,
 * where it landed and what was derived from it, a re-run of a dead-lettered
 * file, and live updates over a WebSocket.
 */
export function registerStatusRoutes(app: FastifyInstance, deps: StatusDeps): void {
  const { keys, metrics, log } = deps;
  const api = app.withTypeProvider<ZodTypeProvider>();
  const ledger = (): StatusLedger => {
    if (!deps.status) throw new HttpError(503, "INTERNAL_ERROR", "the status ledger is off (STATUS=off)");
    return deps.status;
  };
  const record = async (id: string): Promise<FileRecord> => {
    const r = await ledger().get(id);
    if (!r) throw new HttpError(404, "NOT_FOUND", `no status record for file ${id}`);
    return r;
  };
  const read = { role: "read" as const };

  api.get(
    "/api/v1/files",
    {
      config: read,
      schema: { summary: "List file records, newest first", tags: ["status"], querystring: listQuerySchema },
    },
    async (request) => {
      const q = request.query;
      const files = await ledger().list({
        state: q.state,
        source: q.source,
        job: q.job,
        since: q.since ? new Date(q.since) : undefined,
        limit: q.limit ?? 100,
      });
      return { files };
    },
  );
  api.get(
    "/api/v1/files/:file_id",
    { config: read, schema: { summary: "One file record", tags: ["status"], params: fileIdParams } },
    async (request) => record(request.params.file_id),
  );
  api.get(
    "/api/v1/files/:file_id/status",
    { config: read, schema: { summary: "A file's state and progress", tags: ["status"], params: fileIdParams } },
    async (request) => fileProgress(await record(request.params.file_id)),
  );
  api.get(
    "/api/v1/files/:file_id/result",
    {
      config: read,
      schema: { summary: "Where a file landed, and its derived children", tags: ["status"], params: fileIdParams },
    },
    async (request) => {
      const r = await record(request.params.file_id);
      const children = await Promise.all(
        r.children.map(async (id) => {
          const c = await ledger().get(id);
          return c
            ? { file_id: c.id, filename: c.filename, state: c.state, locations: locations(c) }
            : { file_id: id, filename: null, state: null, locations: {} };
        }),
      );
      return { file_id: r.id, filename: r.filename, state: r.state, locations: locations(r), children };
    },
  );
  api.post(
    "/api/v1/files/:file_id/process",
    {
      config: { role: "upload" },
      schema: {
        summary: "Run a dead-lettered or failed file through the pipeline again (409 when its payload is gone)",
        tags: ["status"],
        params: fileIdParams,
      },
    },
    async (request, reply) => {
      const r = await record(request.params.file_id);
      if (r.state !== "failed" && r.state !== "error") {
        throw new HttpError(409, "REQUEST_INVALID", `file ${r.id} is ${r.state}, not failed: nothing to re-run`);
      }
      const result = await reprocess(deps, r.id);
      log.info({ fileId: r.id, seq: result.seq }, "dead-lettered file re-run");
      return reply.code(202).send({ file_id: r.id, state: "published", replayed_from: result.dlqSeqs });
    },
  );

  app.get("/ws", { websocket: true, schema: { hide: true } }, (socket, request) => {
    const query = request.query as { file_id?: string; access_token?: string };
    try {
      // Browsers cannot set headers on a WebSocket: the key may come as ?access_token= instead.
      const header = bearerToken(request.headers.authorization)
        ? request.headers.authorization
        : query.access_token
          ? `Bearer ${query.access_token}`
          : undefined;
      authorize(keys, header, "read");
    } catch (err) {
      socket.close(4401, err instanceof HttpError ? err.code : "AUTH_REQUIRED");
      return;
    }
    if (!deps.status) {
      socket.close(1011, "status ledger is off");
      return;
    }
    metrics.wsClients.inc();
    const watch = deps.status.watch(query.file_id ? { id: query.file_id } : {});
    socket.on("close", () => {
      watch.close();
      metrics.wsClients.dec();
    });
    void (async () => {
      try {
        for await (const u of watch) {
          if (socket.readyState !== socket.OPEN) break;
          const total = u.total;
          socket.send(
            JSON.stringify({
              file_id: u.id,
              state: u.state,
              progress: u.progress ?? (u.state === "delivered" ? 1 : null),
              bytes: u.bytes,
              total,
              ...(u.group ? { group: u.group } : {}),
            }),
          );
        }
      } catch (err) {
        log.debug({ err: describeError(err) }, "websocket watch ended");
      } finally {
        if (socket.readyState === socket.OPEN) socket.close(1000);
      }
    })();
  });
}

/**
 * Republishes the dead letters of `id` (one envelope, whichever groups gave
 * up on it) to SUBJECT under a new Nats-Msg-Id, after checking that its
 * payload object still exists (409 otherwise), and removes them from the DLQ
 * after the PubAck.
 */
async function reprocess(deps: StatusDeps, id: string): Promise<{ seq: number; dlqSeqs: number[] }> {
  const names = jetstreamNames(deps.config);
  const jsm = await jetstreamManager(deps.nc);
  const letters = await findDeadLetters(jsm, names.dlqStream, id);
  const first = letters[0];
  if (!first) {
    throw new HttpError(409, "PAYLOAD_MISSING", `file ${id} has no dead letter left to re-run (its payload is gone)`);
  }
  const envelope: Envelope = parseEnvelope(first.headers);
  if (envelope.payload.kind === "object") {
    try {
      await checkObjectPayload(deps.nc, envelope, envelope.payload, { jsm });
    } catch (err) {
      throw new HttpError(409, "PAYLOAD_MISSING", `the payload of file ${id} is gone: ${describeError(err)}`, {
        cause: err,
      });
    }
  }
  const h = natsHeaders();
  for (const [k, v] of Object.entries(first.headers)) {
    const lower = k.toLowerCase();
    if (lower === "nats-msg-id" || lower.startsWith("filerelay-")) continue;
    h.set(k, v);
  }
  const ack = await jetstream(deps.nc).publish(deps.config.SUBJECT, first.body, { headers: h, msgID: randomUUID() });
  for (const l of letters) await jsm.streams.deleteMessage(names.dlqStream, l.seq, false).catch(() => undefined);
  return { seq: ack.seq, dlqSeqs: letters.map((l) => l.seq) };
}

interface DeadLetter {
  seq: number;
  headers: Record<string, string>;
  body: Uint8Array;
}

/** Dead letters whose ce-id is `id`, read from the DLQ stream (bounded: the newest 10 000). */
async function findDeadLetters(jsm: JetStreamManager, stream: string, id: string): Promise<DeadLetter[]> {
  const info = await jsm.streams.info(stream).catch(() => undefined);
  if (!info || info.state.messages === 0) return [];
  const out: DeadLetter[] = [];
  const from = Math.max(info.state.first_seq, info.state.last_seq - 10_000);
  for (let seq = info.state.last_seq; seq >= from; seq--) {
    const m = await jsm.streams.getMessage(stream, { seq }).catch(() => null);
    if (!m || m.header?.get("ce-id") !== id) continue;
    const headers: Record<string, string> = {};
    for (const [k, v] of m.header) if (v[0] !== undefined) headers[k] = v[0];
    out.push({ seq, headers, body: m.data });
  }
  return out;
}

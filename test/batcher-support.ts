/**
 * Shared by the batcher tests: the built batcher as a process, a producer
 * landing its batches under their own names, and publishing events.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { jetstream } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { listFiles, producerEnv } from "./producer-support.js";
import { startNodeProcess, startService, type RunningService } from "./support/index.js";

export const batcherEntry = fileURLToPath(new URL("../packages/batcher/dist/main.js", import.meta.url));

export function startBatcher(env: Record<string, string>): RunningService<"batcher"> {
  return startNodeProcess("batcher", batcherEntry, { HTTP_PORT: "0", LOG_LEVEL: "info", ...env });
}

/** Short intervals so a test sees several windows within seconds. */
export function batcherEnv(natsUrl: string, spoolDir: string, extra: Record<string, string> = {}) {
  return {
    NATS_URL: natsUrl,
    ROTATION_INTERVAL_MS: "2000",
    ROTATION_CHECK_MS: "200",
    EVENTS_ACK_WAIT_MS: "8000",
    BATCH_SPOOL_DIR: spoolDir,
    SHUTDOWN_TIMEOUT_MS: "10000",
    // A restart after a kill waits for the killed process's lease to run out.
    BATCH_LEASE_MS: "3000",
    ...extra,
  };
}

/** A producer writing each batch as OUTPUT_DIR/<batch name>. */
export function startBatchProducer(natsUrl: string, outputDir: string): RunningService {
  return startService(
    "producer",
    producerEnv(natsUrl, {
      OUTPUT_DIR: outputDir,
      ORGANIZE_BY: "none",
      FILENAME_TEMPLATE: "{{.Name}}{{.Ext}}",
      LOG_LEVEL: "info",
    }),
  );
}

export const published = (svc: RunningService<"batcher">) => svc.logs().filter((l) => l.msg === "batch published");

export async function readOutputs(dir: string): Promise<{ name: string; content: Buffer }[]> {
  const names = await listFiles(dir);
  return Promise.all(names.map(async (name) => ({ name, content: await readFile(join(dir, name)) })));
}

export interface EventPublisher extends AsyncDisposable {
  nc: NatsConnection;
  /** Publishes with JetStream (waits for the PubAck), at most `parallel` in flight. */
  publishAll(subject: string, events: (string | Buffer)[], parallel?: number): Promise<void>;
}

export async function eventPublisher(url: string): Promise<EventPublisher> {
  const nc = await connect({ servers: url });
  const js = jetstream(nc, { timeout: 20_000 });
  return {
    nc,
    async publishAll(subject, events, parallel = 256) {
      let next = 0;
      const worker = async () => {
        while (next < events.length) {
          const e = events[next++]!;
          await js.publish(subject, typeof e === "string" ? Buffer.from(e) : e);
        }
      };
      await Promise.all(Array.from({ length: parallel }, worker));
    },
    [Symbol.asyncDispose]: () => nc.close(),
  };
}

/** GET on a service's HTTP port: status and body. */
export async function httpGet(port: number, path: string): Promise<{ status: number; text: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, text: await res.text() };
}

/** The value of one sample in Prometheus text (labels not named are ignored), or undefined. */
export function metricSample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = new Map([...(m[2] ?? "").matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]] as const));
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) return Number(m[3]);
  }
  return undefined;
}

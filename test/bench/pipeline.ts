import { mkdir, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { startNats, startService, waitFor, type NatsServer, type RunningService } from "../support/index.js";
import { countFiles, removeDir, tempDir } from "./benchSupport.js";

export interface PipelineOptions {
  producers?: number;
  consumerEnv?: Record<string, string>;
  producerEnv?: Record<string, string>;
}

/**
 * A fresh nats-server, one consumer and N producers as real processes, with
 * their own directories. `warmUp()` relays one file so both sides are connected
 * and provisioned before anything is timed.
 */
export class Pipeline implements AsyncDisposable {
  nats!: NatsServer;
  consumer!: RunningService;
  producers: RunningService[] = [];
  root!: string;
  input!: string;
  output!: string;
  archive!: string;
  errors!: string;
  staging!: string;

  static async start(options: PipelineOptions = {}): Promise<Pipeline> {
    const p = new Pipeline();
    p.root = await tempDir("pipe");
    p.input = join(p.root, "input");
    p.output = join(p.root, "output");
    p.archive = join(p.root, "archive");
    p.errors = join(p.root, "error");
    p.staging = join(p.root, "staging");
    for (const d of [p.input, p.output, p.archive, p.errors, p.staging]) await mkdir(d, { recursive: true });
    p.nats = await startNats();
    const common = { NATS_URL: p.nats.url, LOG_LEVEL: "info", HTTP_PORT: "0" };
    for (let i = 0; i < (options.producers ?? 1); i++) {
      p.producers.push(
        startService("producer", {
          ...common,
          OUTPUT_DIR: p.output,
          ORGANIZE_BY: "none",
          ...options.producerEnv,
        }),
      );
    }
    p.consumer = startService("consumer", {
      ...common,
      INPUT_DIR: p.input,
      ARCHIVE_DIR: p.archive,
      ERROR_DIR: p.errors,
      SOURCE: "bench",
      ...options.consumerEnv,
    });
    return p;
  }

  async warmUp(): Promise<void> {
    await writeFile(join(this.input, "warmup.txt"), "warm up\n");
    await waitFor(async () => (await countFiles(this.output)) >= 1, {
      timeoutMs: 60_000,
      message: "the warm-up file to be relayed",
    });
  }

  /** Moves a prepared tree into INPUT_DIR in one rename; resolves when `expected` outputs exist. Returns ms. */
  async relayTree(tree: string, expected: number, timeoutMs = 30 * 60_000): Promise<number> {
    const before = await countFiles(this.output);
    const t0 = performance.now();
    await rename(tree, join(this.input, `batch-${Date.now()}`));
    await waitFor(async () => (await countFiles(this.output)) - before >= expected, {
      timeoutMs,
      intervalMs: 20,
      message: `${expected} files in the output`,
    });
    return performance.now() - t0;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.consumer?.stop().catch(() => undefined);
    await Promise.all(this.producers.map((s) => s.stop().catch(() => undefined)));
    await this.nats?.[Symbol.asyncDispose]();
    await removeDir(this.root);
  }
}

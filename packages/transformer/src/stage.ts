import { randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { JetStreamClient } from "@nats-io/jetstream";
import {
  describeError,
  errorCode,
  publishFile,
  type Envelope,
  type FileContext,
  type NatsConnection,
  type StatusLedger,
} from "@filerelay/core";
import { DERIVATIONS, derivedId } from "./derive.js";
import type { Item, Job, Step } from "./item.js";

export interface StageOptions {
  nc: NatsConnection;
  js: JetStreamClient;
  steps: readonly Step[];
  /** Where results are published (OUTPUT_SUBJECT). */
  outputSubject: string;
  stream: string;
  inlineMaxBytes: number;
  /** Scratch root (TRANSFORM_TMP_DIR). */
  tmpDir: string;
  /**
   * Called before an unchanged Object Store payload is passed on by
   * reference: it must keep the object alive for the new envelope (see
   * passThroughPin).
   */
  pinObject: (name: string) => Promise<void>;
  /** Where derived files are recorded (with their parent); unset with STATUS=off. */
  status?: StatusLedger | undefined;
  /** Observations for metrics. */
  onStep?: (step: string, outcome: "done" | "failed", durationMs: number, code?: string) => void;
  onPublished?: (item: Item, bytes: number, passThrough: boolean) => void;
}

/** Prefix of a job's scratch directory; the pid lets a restart find the ones a crashed process left. */
const SCRATCH_PREFIX = "filerelay-transform-";

/**
 * The stage's per-file work, as a consumeFiles() handler: run the steps on
 * the consumed file and on everything they derive, publish every result on
 * OUTPUT_SUBJECT and return only after the last PubAck (the SDK acks the
 * consumed envelope after that). A file no step changes is passed on as an
 * envelope referencing the same payload, not a copy of its bytes.
 */
export function createStageHandler(opts: StageOptions): (ctx: FileContext) => Promise<void> {
  const { nc, js, steps } = opts;

  const publish = async (item: Item, root: Envelope): Promise<void> => {
    // Derived files keep the consumed file's job, trace and destination; ce-parentid is their own.
    const extensions = { ...root.extensions, parentid: item.parentId };
    const meta = {
      source: root.source,
      subject: item.subject,
      filename: item.filename,
      mtime: item.mtime,
      id: item.id,
      extensions,
      ...(item.contentType ? { contentType: item.contentType } : {}),
    };
    const common = {
      subject: opts.outputSubject,
      stream: opts.stream,
      js,
      inlineMaxBytes: opts.inlineMaxBytes,
      status: opts.status,
    };
    if (item.envelope?.payload.kind === "object") {
      const envelope: Envelope = { ...item.envelope, id: item.id, time: new Date(), extensions };
      await opts.pinObject(item.envelope.payload.name);
      await publishFile(nc, new Uint8Array(0), meta, { ...common, envelope });
      opts.onPublished?.(item, 0, true);
      return;
    }
    const body = item.file !== undefined ? createReadStream(item.file) : item.open();
    const result = await publishFile(nc, body, meta, common);
    opts.onPublished?.(item, result.size, item.envelope !== undefined);
  };

  return async (ctx) => {
    const root = ctx.envelope;
    const dir = join(opts.tmpDir, `${SCRATCH_PREFIX}${process.pid}-${randomBytes(6).toString("hex")}`);
    let made = false;
    let n = 0;
    const job: Job = {
      source: root.source,
      scratchPath: (name) => {
        n += 1;
        // Only the extension of the original name is kept: names come from archives.
        const dot = name.lastIndexOf(".");
        const ext =
          dot > 0
            ? name
                .slice(dot)
                .replace(/[^A-Za-z0-9.]/g, "")
                .slice(0, 16)
            : "";
        return join(dir, `${n}${ext}`);
      },
      working: () => ctx.working(),
      log: ctx.log,
      signal: ctx.signal,
    };
    const runFrom = async (item: Item, from: number): Promise<void> => {
      for (let i = from; i < steps.length; i++) {
        const step = steps[i]!;
        if (!step.applies(item)) continue;
        if (!made) {
          await mkdir(dir, { recursive: true });
          made = true;
        }
        const started = performance.now();
        try {
          await step.run(item, (child) => runFrom(child, i + 1), job);
          opts.onStep?.(step.name, "done", performance.now() - started);
        } catch (err) {
          opts.onStep?.(step.name, "failed", performance.now() - started, errorCode(err, "HANDLER_FAILED"));
          throw err;
        }
        return;
      }
      await publish(item, root);
    };
    const rootItem: Item = {
      id: derivedId(root.id, DERIVATIONS.passThrough),
      basisId: root.id,
      parentId: root.id,
      subject: root.subject,
      filename: root.filename,
      mtime: root.mtime,
      size: root.size,
      depth: 0,
      envelope: root,
      open: () => ctx.open(),
    };
    try {
      await runFrom(rootItem, 0);
    } finally {
      if (made) {
        await rm(dir, { recursive: true, force: true }).catch((err: unknown) =>
          ctx.log.warn({ dir, err: describeError(err) }, "cannot remove the scratch directory"),
        );
      }
    }
  };
}

/** Removes scratch directories of processes that are gone (a crash leaves its job's files behind). */
export async function removeStaleScratch(tmpDir: string): Promise<string[]> {
  const removed: string[] = [];
  const names = await readdir(tmpDir).catch(() => [] as string[]);
  for (const name of names) {
    const m = new RegExp(`^${SCRATCH_PREFIX}(\\d+)-`).exec(name);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || isAlive(pid)) continue;
    await rm(join(tmpDir, name), { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

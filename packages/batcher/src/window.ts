import { join } from "node:path";
import type { BatchFormat } from "./config.js";
import { SpoolWriter } from "./spool.js";
import { stripXmlDeclaration, XmlBatchChecker } from "./xml.js";

/**
 * The open window: per key (BATCH_KEY) a batch spooled to disk with its
 * running format check, plus what acknowledging the window needs later (the
 * events' ack subjects) and what identifies it (its stream sequences, as runs).
 */

/** Checks a batch's events as they arrive; finish() says why it is not valid, or undefined. */
interface BatchCheck {
  add(event: Buffer): void;
  finish(): string | undefined;
}

function xmlCheck(root: string): BatchCheck {
  const checker = new XmlBatchChecker(root);
  return { add: (e) => checker.add(stripXmlDeclaration(e)), finish: () => checker.finish() };
}

function jsonlCheck(): BatchCheck {
  let problem: string | undefined;
  return {
    add(e) {
      if (problem !== undefined) return;
      try {
        JSON.parse(e.toString("utf8"));
      } catch (err) {
        problem = `an event is not JSON: ${(err as Error).message}`;
      }
    },
    finish: () => problem,
  };
}

export interface OpenBatch {
  key: string | undefined;
  spool: SpoolWriter;
  check: BatchCheck | undefined;
  /** Stream sequence of the batch's first event (names its spool file). */
  firstSeq: number;
}

export interface WindowOptions {
  format: BatchFormat;
  root: string;
  spoolDir: string;
}

/** Sequence runs `[from, to]`, inclusive, in arrival order. */
export type Runs = [number, number][];

export class Window {
  readonly batches = new Map<string, OpenBatch>();
  readonly runs: Runs = [];
  /** Ack subjects of the window's events, in arrival order. */
  readonly replies: string[] = [];
  /** Stream sequences already in the window (a redelivery of one is acked with the window, not added twice). */
  private readonly seqs = new Set<number>();
  openedAt: number | undefined;
  /** When the window's events were last kept alive (delivery or in-progress ack). */
  touchedAt = 0;
  events = 0;
  bytes = 0;

  constructor(private readonly options: WindowOptions) {}

  has(seq: number): boolean {
    return this.seqs.has(seq);
  }

  batch(key: string | undefined): OpenBatch | undefined {
    return this.batches.get(key ?? "");
  }

  /** Whether `seq` continues the last run (otherwise it starts a new one). */
  extendsRun(seq: number): boolean {
    const last = this.runs.at(-1);
    return last !== undefined && last[1] + 1 === seq;
  }

  add(seq: number, key: string | undefined, event: Buffer, reply: string, now: number): void {
    let batch = this.batches.get(key ?? "");
    if (!batch) {
      const name = `${seq}-${key === undefined ? "all" : Buffer.from(key).toString("hex")}.spool`;
      batch = {
        key,
        spool: new SpoolWriter(join(this.options.spoolDir, name)),
        check:
          this.options.format === "xml"
            ? xmlCheck(this.options.root)
            : this.options.format === "jsonl"
              ? jsonlCheck()
              : undefined,
        firstSeq: seq,
      };
      this.batches.set(key ?? "", batch);
    }
    batch.spool.append(event);
    batch.check?.add(event);
    if (this.extendsRun(seq)) this.runs.at(-1)![1] = seq;
    else this.runs.push([seq, seq]);
    this.seqs.add(seq);
    this.replies.push(reply);
    this.events++;
    this.bytes += event.length;
    if (this.openedAt === undefined) {
      this.openedAt = now;
      this.touchedAt = now;
    }
  }

  /** A redelivered event already in the window: its newest ack subject is the one to use. */
  addReply(reply: string): void {
    this.replies.push(reply);
  }
}

import type { Readable } from "node:stream";
import type { Envelope, Logger } from "@filerelay/core";

/**
 * One file on its way through the steps: the file that was consumed, or one
 * derived from it. Only what a step needs; the envelope is built when the
 * item is published.
 */
export interface Item {
  /** The ce-id it is published under. */
  id: string;
  /** The ce-id its derived files derive from and name as ce-parentid (the consumed file's own for the root). */
  basisId: string;
  /** ce-parentid when published. */
  parentId: string;
  subject: string;
  filename: string;
  mtime: Date;
  /** Size when known before reading (the root, spooled files). */
  size: number | undefined;
  /** Archive nesting level: 0 for the consumed file, +1 per archive it came out of. */
  depth: number;
  /** A local copy, when one exists (a spooled archive, a converted file): read it instead of the stream. */
  file?: string;
  /** Set on the consumed file while it is unchanged: it passes on by reference, not by copying. */
  envelope?: Envelope;
  /** content-type when not from the extension. */
  contentType?: string;
  /** The content; each call is a new read from the start. */
  open(): Readable;
}

/** What a step may use while it transforms one consumed file. */
export interface Job {
  /** ce-source of the consumed file: derived files keep it. */
  source: string;
  /** A fresh path in this job's scratch directory (removed when the job ends). */
  scratchPath(name: string): string;
  /** Keeps the delivery alive while a long step runs (throttled by the SDK). */
  working(): void;
  log: Logger;
  signal: AbortSignal;
}

export type Emit = (item: Item) => Promise<void>;

export interface Step {
  readonly name: string;
  /** Does this step transform `item`? If not, the item goes on to the next step unchanged. */
  applies(item: Item): boolean;
  /**
   * Transforms `item`: every resulting file (and the item itself, when it is
   * kept) is handed to `emit`, which runs the later steps on it and publishes
   * it. Throws a permanent FilerelayError for a file it refuses.
   */
  run(item: Item, emit: Emit, job: Job): Promise<void>;
}

import { opendirSync, type Dir } from "node:fs";
import type { KnownFile, ScannedFile } from "./directoryScanner.js";

/** Longest stretch of synchronous directory reads and lstat calls before a walk yields to the event loop. */
const SLICE_MS = 5;
/** Directory entries fetched per getdents call. */
const DIR_BUFFER = 256;

export interface WalkOptions<K extends KnownFile = KnownFile> {
  /** Light walks: paths it knows come back in `known`, not stat'ed. */
  isKnown?: (rel: string) => boolean;
  /** Polls: known paths are stat'ed, and those unchanged come back in `unchanged` as the object it returned. */
  known?: (rel: string) => K | undefined;
}

export interface ScanResult<K extends KnownFile = KnownFile> {
  files: ScannedFile[];
  /** Relative paths of files whose ready marker exists. */
  markers: Set<string>;
  /** Paths seen but not candidates, with why (debug logs; `warn` for what an operator must fix). */
  skipped: { rel: string; reason: string; warn?: boolean }[];
  /** Light scans: paths listed but not stat'ed because the caller knows them. */
  known: string[];
  /**
   * Polls: what `known` returned for each known file found unchanged (the
   * caller's own objects, so that neither side allocates or looks up anything
   * more per resident file).
   */
  unchanged: K[];
  /** Directories (relative, "" for INPUT_DIR) holding at least one candidate, known or not. */
  dirs: string[];
}

export function emptyResult<K extends KnownFile = KnownFile>(): ScanResult<K> {
  return { files: [], markers: new Set(), skipped: [], known: [], unchanged: [], dirs: [] };
}

/** What the walk does with one entry: enter it (a directory), count it as a candidate, or pass over it. */
export type Visit<K extends KnownFile> = (
  dir: string,
  name: string,
  isDir: boolean,
  result: ScanResult<K>,
) => Promise<"descend" | "candidate" | undefined>;

/**
 * A depth-first walk of a directory tree that can stop after any entry and
 * resume later: what it still has to read is a stack of directory paths and
 * at most one open directory stream, never a listing. Memory is bounded by the
 * step size and the number of directories, not by the number of files, so a
 * consumer can pause discovery while its working window is full.
 */
export class DirectoryWalk<K extends KnownFile = KnownFile> {
  readonly #absolute: (rel: string) => string;
  readonly #visit: Visit<K>;
  /** Directories still to read, and whether to enter their subdirectories. */
  readonly #stack: { rel: string; deep: boolean }[];
  #current: { rel: string; deep: boolean; dir: Dir; candidates: boolean } | undefined;

  constructor(absolute: (rel: string) => string, visit: Visit<K>, dirs: readonly string[]) {
    this.#absolute = absolute;
    this.#visit = visit;
    this.#stack = [...dirs].reverse().map((rel) => ({ rel, deep: true }));
  }

  /** Nothing left to read. */
  get done(): boolean {
    return this.#current === undefined && this.#stack.length === 0;
  }

  /** Directories still to read (not counting the one open). */
  get pendingDirs(): number {
    return this.#stack.length;
  }

  /** Adds a directory to read next; `deep`: with everything below it (a directory that just appeared). */
  push(rel: string, deep = true): void {
    this.#stack.push({ rel, deep });
  }

  /** Reads up to `maxEntries` more entries and returns what they hold. */
  async step(maxEntries: number): Promise<ScanResult<K>> {
    const result = emptyResult<K>();
    let sliceStart = performance.now();
    for (let n = 0; n < maxEntries;) {
      if (!this.#current) {
        const next = this.#stack.pop();
        if (next === undefined) break;
        const { rel, deep } = next;
        try {
          // Synchronous: opening a directory and reading DIR_BUFFER entries at a
          // time costs microseconds; each read through the thread pool costs more.
          const dir = opendirSync(this.#absolute(rel), { bufferSize: DIR_BUFFER });
          this.#current = { rel, deep, dir, candidates: false };
        } catch {
          // A directory we may not read, or one gone meanwhile, must not abort the walk.
          continue;
        }
      }
      const cur = this.#current;
      let entry;
      try {
        entry = cur.dir.readSync();
      } catch {
        entry = null;
      }
      if (entry === null) {
        this.#closeCurrent();
        continue;
      }
      n++;
      const got = await this.#visit(cur.rel, entry.name, entry.isDirectory(), result);
      if (got === "descend") {
        if (cur.deep) this.#stack.push({ rel: cur.rel === "" ? entry.name : `${cur.rel}/${entry.name}`, deep: true });
      } else if (got === "candidate" && !cur.candidates) {
        cur.candidates = true;
        result.dirs.push(cur.rel);
      }
      if ((n & 63) === 0 && performance.now() - sliceStart > SLICE_MS) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        sliceStart = performance.now();
      }
    }
    return result;
  }

  #closeCurrent(): void {
    try {
      this.#current?.dir.closeSync();
    } catch {
      /* already closed */
    }
    this.#current = undefined;
  }

  /** Releases the open directory stream (the walk is abandoned). */
  close(): Promise<void> {
    this.#closeCurrent();
    this.#stack.length = 0;
    return Promise.resolve();
  }
}

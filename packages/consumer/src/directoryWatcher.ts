import { watch, type FSWatcher } from "node:fs";
import { opendir } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "@filerelay/core";

export interface DirectoryWatcherOptions {
  root: string;
  /** Called with the '/'-separated relative path of every changed entry. */
  onPath: (rel: string) => void;
  /** Relative directories never to watch (dot dirs, ARCHIVE_DIR/ERROR_DIR inside INPUT_DIR). */
  isIgnored: (rel: string) => boolean;
  log: Logger;
  /** Upper bound of directory watches (inotify watches are a per-user resource). */
  maxWatches?: number;
}

/**
 * One non-recursive fs.watch per directory of INPUT_DIR. Node's recursive
 * watch on Linux adds a watch per *file*, which does not scale to 10,000
 * files; a directory watch already reports its files' creation and writes.
 * Events only hint that something changed: they are lost on NFS/SMB and under
 * load, so the scanner stays the source of truth. Directories that cannot be
 * watched (limits, races) are simply left to polling.
 */
export class DirectoryWatcher implements AsyncDisposable {
  readonly #watchers = new Map<string, FSWatcher>();
  readonly #options: DirectoryWatcherOptions;
  readonly #maxWatches: number;
  #closed = false;
  #warned = false;

  constructor(options: DirectoryWatcherOptions) {
    this.#options = options;
    this.#maxWatches = options.maxWatches ?? 8192;
  }

  get size(): number {
    return this.#watchers.size;
  }

  /** Watches one directory ("" is INPUT_DIR itself); false when it could not be watched. */
  watchDir(relDir: string): boolean {
    if (this.#closed) return false;
    if (this.#watchers.has(relDir)) return true;
    if (relDir !== "" && this.#options.isIgnored(relDir)) return false;
    if (this.#watchers.size >= this.#maxWatches) {
      this.#warnOnce(`more than ${this.#maxWatches} directories; the rest rely on polling`);
      return false;
    }
    const abs = relDir === "" ? this.#options.root : join(this.#options.root, ...relDir.split("/"));
    try {
      const w = watch(abs, { persistent: false }, (_event, filename) => {
        if (filename) this.#options.onPath(relDir === "" ? filename : `${relDir}/${filename}`);
      });
      w.on("error", () => {
        // Typically the directory was removed; polling notices what matters.
        this.#unwatch(relDir);
      });
      this.#watchers.set(relDir, w);
      return true;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOSPC" || code === "EMFILE") this.#warnOnce(`cannot add more watches (${code})`);
      else this.#options.log.debug({ dir: relDir, err }, "cannot watch directory");
      return false;
    }
  }

  /** Watches a directory and everything below it (a directory that just appeared). */
  async watchTree(relDir: string): Promise<void> {
    if (!this.watchDir(relDir)) return;
    const abs = relDir === "" ? this.#options.root : join(this.#options.root, ...relDir.split("/"));
    // Streamed: a directory that just appeared may hold a million files; only its subdirectories matter here.
    const subdirs: string[] = [];
    try {
      for await (const e of await opendir(abs, { bufferSize: 256 })) {
        if (e.isDirectory() && !e.name.startsWith(".")) subdirs.push(e.name);
      }
    } catch {
      return;
    }
    for (const name of subdirs) await this.watchTree(relDir === "" ? name : `${relDir}/${name}`);
  }

  #unwatch(relDir: string): void {
    const w = this.#watchers.get(relDir);
    this.#watchers.delete(relDir);
    try {
      w?.close();
    } catch {
      /* already closed */
    }
  }

  #warnOnce(reason: string): void {
    if (this.#warned) return;
    this.#warned = true;
    this.#options.log.warn({ reason }, "file-system watch limited; polling covers the rest");
  }

  close(): Promise<void> {
    this.#closed = true;
    for (const dir of [...this.#watchers.keys()]) this.#unwatch(dir);
    return Promise.resolve();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

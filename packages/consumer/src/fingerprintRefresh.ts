import { fileVersionId, type Logger } from "@filerelay/core/internal";
import type { FingerprintStore } from "./fingerprintStore.js";
import type { SettledFiles } from "./settledFiles.js";
import type { TrackedFile } from "./trackedFile.js";

/**
 * Leave-in-place: the fingerprint records of published files still in the
 * directory are rewritten once they are half-way to expiring, so that a
 * restart does not publish them again. Which records are due is decided
 * here; the caller runs it after a poll, in the background.
 */

/** A record due for a rewrite, and how to note that it was rewritten. */
export interface DueRecord {
  fingerprint: string;
  size: number;
  /** Relative path when known (a file still in the window), else "". */
  path: string;
  done: (at: number) => void;
}

/**
 * The records last written before `due`: first the files still in the
 * window (full records; taken as a snapshot on the first next(), each checked
 * again when its turn comes), then the compact settled records, walked lazily
 * (there may be millions).
 */
export function* dueRecords(
  window: Iterable<TrackedFile>,
  settled: SettledFiles,
  due: number,
): Generator<DueRecord, void, undefined> {
  const linked: TrackedFile[] = [];
  for (const rec of window) {
    if (rec.state === "done" && rec.fingerprint && (rec.recordedAt ?? 0) < due) linked.push(rec);
  }
  for (const rec of linked) {
    if (rec.state !== "done" || !rec.fingerprint) continue;
    yield { fingerprint: rec.fingerprint, size: rec.size, path: rec.rel, done: (at) => (rec.recordedAt = at) };
  }
  for (const view of settled.dueForRefresh(due)) {
    if (!view.fingerprint) continue;
    const { key } = view;
    yield { fingerprint: view.fingerprint, size: view.size, path: "", done: (at) => settled.setRecordedAt(key, at) };
  }
}

/**
 * Rewrites the records of `items` with `concurrency` workers sharing the one
 * sequence (its next() is synchronous); a record that expired meanwhile (a
 * long stop) is written anew from what is known of it. A failed rewrite is
 * left for the next poll. Stops taking new records once `stopping()`; returns
 * how many were rewritten.
 */
export async function refreshRecords(
  items: Iterator<DueRecord, void, undefined>,
  store: FingerprintStore,
  opts: { concurrency: number; stopping: () => boolean; log: Logger },
): Promise<number> {
  let refreshed = 0;
  const take = (): DueRecord | undefined => {
    if (opts.stopping()) return undefined;
    const next = items.next();
    return next.done ? undefined : next.value;
  };
  const worker = async () => {
    for (let item = take(); item; item = take()) {
      try {
        const kept = await store.refresh(item.fingerprint);
        if (!kept) {
          await store.record(item.fingerprint, {
            id: fileVersionId(item.fingerprint),
            path: item.path,
            size: item.size,
            sha256: "",
            publishedAt: "",
          });
        }
        item.done(Date.now());
        refreshed++;
      } catch (err) {
        opts.log.debug(
          { err, path: item.path },
          "could not refresh a fingerprint record; retrying after the next poll",
        );
      }
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, worker));
  return refreshed;
}

import { fsyncPath } from "@filerelay/core/internal";

/** Per directory: the running fsync, and the next one (not started yet) that later callers join. */
const dirSyncs = new Map<string, { running: Promise<void>; next: Promise<void> | undefined }>();
const ignore = () => undefined;

/**
 * fsync of a directory, shared by concurrent writers (group commit): a caller
 * whose rename is done joins the next fsync that has not started yet, so it is
 * covered, and N files renamed into one directory at once cost about two
 * directory fsyncs instead of N.
 */
export function fsyncDirShared(dir: string): Promise<void> {
  const state = dirSyncs.get(dir);
  if (state?.next) return state.next;
  const prev = state?.running ?? Promise.resolve();
  const entry = state ?? { running: prev, next: undefined };
  const p = prev.then(ignore, ignore).then(() => {
    // Started: whoever comes from now on needs a later one.
    entry.next = undefined;
    return fsyncPath(dir);
  });
  entry.running = p;
  entry.next = p;
  if (!state) dirSyncs.set(dir, entry);
  const cleanup = () => {
    if (entry.running === p && dirSyncs.get(dir) === entry) dirSyncs.delete(dir);
  };
  p.then(cleanup, cleanup);
  return p;
}

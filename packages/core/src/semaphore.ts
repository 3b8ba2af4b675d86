/**
 * A counting semaphore: at most `permits` holders at once; the others wait in
 * arrival order. Used to bound the files whose payload streams through the
 * Object Store (memory per stream) below the files handled at once.
 */
export interface Semaphore {
  /** Resolves with a release function once a permit is free; release is idempotent. */
  acquire(): Promise<() => void>;
  readonly available: number;
  readonly waiting: number;
}

export function createSemaphore(permits: number): Semaphore {
  let free = Math.max(1, Math.floor(permits));
  const queue: (() => void)[] = [];
  const releaser = () => {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = queue.shift();
      if (next) next();
      else free++;
    };
  };
  return {
    acquire() {
      if (free > 0) {
        free--;
        return Promise.resolve(releaser());
      }
      return new Promise((resolve) => queue.push(() => resolve(releaser())));
    },
    get available() {
      return free;
    },
    get waiting() {
      return queue.length;
    },
  };
}

import { readdirSync, readFileSync, readlinkSync } from "node:fs";

/** Snapshots are taken at most this often... */
const MIN_SNAPSHOT_INTERVAL_MS = 250;
/** ...and no sooner than this many times the CPU time of the last one (a host with many open files costs more). */
const SNAPSHOT_CPU_FACTOR = 50;
/** O_ACCMODE bits of /proc/<pid>/fdinfo "flags": 1 = O_WRONLY, 2 = O_RDWR. */
const ACCESS_MODE_MASK = 0o3;

/** A process holding a file open for writing. */
export interface OpenWriter {
  pid: number;
  /** The process's command name, for the log line. */
  command: string;
}

/**
 * Which files under a directory other processes on this host hold open for
 * writing, from /proc (Linux). A writer that pauses longer than STABILITY_MS
 * would otherwise get its file published half-written. Limits: only processes
 * this user may inspect (all of them as root; the same user otherwise), in
 * this pid namespace (a container sees its own), on this host (a writer on
 * another machine of a shared volume is invisible), and nothing where /proc
 * is missing (not Linux): there the stability wait alone decides.
 */
export class OpenWriters {
  readonly #prefix: string;
  #snapshot = new Map<string, OpenWriter>();
  #takenAt = Number.NEGATIVE_INFINITY;
  #intervalMs = MIN_SNAPSHOT_INTERVAL_MS;
  #available = true;

  /** `realRoot`: the real path of the watched directory (what /proc links show). */
  constructor(realRoot: string) {
    this.#prefix = realRoot.endsWith("/") ? realRoot : `${realRoot}/`;
  }

  /**
   * The writer holding `realPath` open, if any, from a snapshot taken no
   * earlier than `notBefore` (ms epoch) when possible: a file is checked once
   * it has been quiet for a while, so a snapshot from after its last change
   * sees a writer that still holds it.
   */
  writerOf(realPath: string, notBefore: number): OpenWriter | undefined {
    if (!this.#available) return undefined;
    const now = Date.now();
    if (this.#takenAt < notBefore && now - this.#takenAt >= this.#intervalMs) this.#take(now);
    return this.#snapshot.get(realPath);
  }

  #take(now: number): void {
    const cpu0 = process.cpuUsage();
    const snapshot = new Map<string, OpenWriter>();
    let pids: string[];
    try {
      pids = readdirSync("/proc").filter((name) => /^\d+$/.test(name));
    } catch {
      this.#available = false;
      return;
    }
    const self = String(process.pid);
    for (const pid of pids) {
      if (pid === self) continue;
      let fds: string[];
      try {
        fds = readdirSync(`/proc/${pid}/fd`);
      } catch {
        // Gone, or not ours to inspect.
        continue;
      }
      let command: string | undefined;
      for (const fd of fds) {
        let target: string;
        try {
          target = readlinkSync(`/proc/${pid}/fd/${fd}`);
        } catch {
          continue;
        }
        if (!target.startsWith(this.#prefix)) continue;
        if (!openedForWriting(pid, fd)) continue;
        command ??= readCommand(pid);
        snapshot.set(target, { pid: Number(pid), command });
      }
    }
    this.#snapshot = snapshot;
    this.#takenAt = now;
    const cpu = process.cpuUsage(cpu0);
    this.#intervalMs = Math.max(MIN_SNAPSHOT_INTERVAL_MS, (SNAPSHOT_CPU_FACTOR * (cpu.user + cpu.system)) / 1000);
  }
}

function openedForWriting(pid: string, fd: string): boolean {
  try {
    const info = readFileSync(`/proc/${pid}/fdinfo/${fd}`, "utf8");
    const m = /^flags:\s*([0-7]+)/m.exec(info);
    return m !== null && (parseInt(m[1] ?? "0", 8) & ACCESS_MODE_MASK) !== 0;
  } catch {
    return false;
  }
}

function readCommand(pid: string): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  } catch {
    return "?";
  }
}

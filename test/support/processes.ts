import { spawn, type ChildProcess } from "node:child_process";

/**
 * Child processes started by tests must not outlive the test run, even when
 * the runner is SIGKILLed. Each child gets a tiny shell watchdog that polls the
 * test process and SIGKILLs the child once the test process is gone; the
 * watchdog exits by itself when the child does.
 */
const children = new Set<ChildProcess>();

export function guardChild(child: ChildProcess): ChildProcess {
  if (child.pid === undefined) return child;
  children.add(child);
  child.once("exit", () => children.delete(child));
  const script = `while kill -0 ${process.pid} 2>/dev/null && kill -0 ${child.pid} 2>/dev/null; do sleep 0.5; done; kill -9 ${child.pid} 2>/dev/null; exit 0`;
  const dog = spawn("sh", ["-c", script], { stdio: "ignore", detached: true });
  dog.unref();
  return child;
}

function killAll(): void {
  for (const c of children) {
    try {
      c.kill("SIGKILL");
    } catch {
      /* already gone */
    }
  }
}

process.once("exit", killAll);
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.once(sig, () => {
    killAll();
    process.exit(130);
  });
}

/** Resolves when the child exits (immediately if it already has). */
export function waitForExit(child: ChildProcess, timeoutMs = 30_000): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`process ${child.pid} did not exit within ${timeoutMs} ms`)),
      timeoutMs,
    );
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

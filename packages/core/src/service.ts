import { ConfigError, describeError, isFilerelayError } from "./errors.js";
import { installGcSlackFloor } from "./gcSlack.js";

/** Exit status for bad configuration (sysexits.h EX_CONFIG). */
export const EXIT_CONFIG = 78;

/** Exit status when a graceful stop did not finish by its deadline. */
export const EXIT_STOP_TIMEOUT = 1;

/** SHUTDOWN_TIMEOUT_MS's default, used until the service's configuration is known. */
export const DEFAULT_SHUTDOWN_TIMEOUT_MS = 30_000;

/** Time beyond SHUTDOWN_TIMEOUT_MS for the work after the drain (closing NATS, HTTP, files). */
export const SHUTDOWN_MARGIN_MS = 3000;

export interface ServiceContext {
  /** Aborted on the first SIGTERM/SIGINT: stop taking work, finish or abandon in-flight work, return. */
  signal: AbortSignal;
  /**
   * The service's SHUTDOWN_TIMEOUT_MS, once its configuration is loaded: the
   * process exits at the latest this long (plus SHUTDOWN_MARGIN_MS) after the
   * first signal, whatever is still running.
   */
  setShutdownTimeout: (ms: number) => void;
}

/** SHUTDOWN_TIMEOUT_MS read leniently from the environment, before (or without) the service's schema. */
export function shutdownTimeoutFromEnv(env: Record<string, string | undefined>): number {
  const raw = env.SHUTDOWN_TIMEOUT_MS?.trim();
  return raw && /^\d+$/.test(raw) ? Number(raw) : DEFAULT_SHUTDOWN_TIMEOUT_MS;
}

/**
 * Runs a service's main function with the process-level conventions every
 * filerelay service shares: a floor under the garbage collector's room for
 * a small heap (see gcSlack); the first SIGTERM/SIGINT asks for a graceful stop
 * (the signal aborts), a second one exits at once, and a stop still running
 * SHUTDOWN_TIMEOUT_MS + SHUTDOWN_MARGIN_MS after the first signal exits
 * non-zero (a start-up step stuck on a broken mount must not keep a pod in
 * Terminating); bad configuration exits 78 after printing every problem; any
 * other failure exits 1 with its cause chain.
 */
export function runService(name: string, main: (ctx: ServiceContext) => Promise<void>): void {
  installGcSlackFloor();
  const controller = new AbortController();
  let shutdownTimeoutMs = shutdownTimeoutFromEnv(process.env);
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    signals++;
    if (signals === 1) {
      process.stderr.write(`${name}: ${sig} received, shutting down (send again to exit at once)\n`);
      const deadlineMs = shutdownTimeoutMs + SHUTDOWN_MARGIN_MS;
      // Unref'd: a stop that finishes sooner exits on its own.
      setTimeout(() => {
        process.stderr.write(`${name}: still stopping ${deadlineMs} ms after ${sig}; exiting now\n`);
        process.exit(EXIT_STOP_TIMEOUT);
      }, deadlineMs).unref();
      controller.abort(new Error(`${sig} received`));
    } else {
      process.stderr.write(`${name}: second ${sig}, exiting now\n`);
      process.exit(130);
    }
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);

  const setShutdownTimeout = (ms: number) => {
    shutdownTimeoutMs = ms;
  };
  main({ signal: controller.signal, setShutdownTimeout }).then(
    () => process.exit(0),
    (err: unknown) => {
      if (err instanceof ConfigError) {
        process.stderr.write(`${name}: ${err.message}\n`);
        process.exit(EXIT_CONFIG);
      }
      const code = isFilerelayError(err) ? ` [${err.code}]` : "";
      process.stderr.write(`${name}: fatal${code}: ${describeError(err)}\n`);
      process.exit(1);
    },
  );
}

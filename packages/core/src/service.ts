import { ConfigError, describeError, isFilerelayError } from "./errors.js";

/** Exit status for bad configuration (sysexits.h EX_CONFIG). */
export const EXIT_CONFIG = 78;

export interface ServiceContext {
  /** Aborted on the first SIGTERM/SIGINT: stop taking work, finish or abandon in-flight work, return. */
  signal: AbortSignal;
}

/**
 * Runs a service's main function with the process-level conventions every
 * filerelay service shares: the first SIGTERM/SIGINT asks for a graceful stop
 * (the signal aborts), a second one exits at once; bad configuration exits 78
 * after printing every problem; any other failure exits 1 with its cause chain.
 */
export function runService(name: string, main: (ctx: ServiceContext) => Promise<void>): void {
  const controller = new AbortController();
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    signals++;
    if (signals === 1) {
      process.stderr.write(`${name}: ${sig} received, shutting down (send again to exit at once)\n`);
      controller.abort(new Error(`${sig} received`));
    } else {
      process.stderr.write(`${name}: second ${sig}, exiting now\n`);
      process.exit(130);
    }
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);

  main({ signal: controller.signal }).then(
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

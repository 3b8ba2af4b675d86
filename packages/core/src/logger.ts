import { pino, type Logger, type LoggerOptions } from "pino";

export type { Logger } from "pino";

/** Longest a log line waits in the buffer. */
const LOG_FLUSH_MS = 100;
const LOG_BUFFER_BYTES = 8 * 1024;

export interface LoggerConfig {
  LOG_LEVEL: string;
  LOG_PRETTY: boolean;
}

/** Properties censored one level down in anything logged, as pino's redact paths `*.<key>` would. */
const SECRET_KEYS = ["NATS_TOKEN", "NATS_PASSWORD", "password", "pass", "token", "secretAccessKey"] as const;
const CENSOR = "[redacted]";

/**
 * `redact: { paths: ["*.password", …] }` by hand, for what a line logs: pino's
 * generic redaction cost ~10 µs per line and ~2 µs per child logger, two
 * thirds of a file's log line. Errors pass through whole (their serializer
 * needs them).
 */
export function redactSecrets(obj: Record<string, unknown>): Record<string, unknown> {
  let out = obj;
  for (const key in obj) {
    const value = obj[key];
    if (value === null || typeof value !== "object" || value instanceof Error) continue;
    let copy: Record<string, unknown> | undefined;
    for (const secret of SECRET_KEYS) {
      if (Object.hasOwn(value, secret)) {
        copy ??= { ...(value as Record<string, unknown>) };
        copy[secret] = CENSOR;
      }
    }
    if (copy) {
      if (out === obj) out = { ...obj };
      out[key] = copy;
    }
  }
  return out;
}

/**
 * JSON lines to stdout (one object per event) unless LOG_PRETTY. Child loggers
 * add `source`/`group` per service and `fileId` per file.
 */
export function createLogger(config: LoggerConfig, bindings: { service: string } & Record<string, unknown>): Logger {
  const options: LoggerOptions = {
    level: config.LOG_LEVEL,
    base: { ...bindings },
    timestamp: pino.stdTimeFunctions.isoTime,
    // Defence in depth: config values are redacted before logging anyway. (Child
    // bindings are not passed through it: they are ids our code sets, never config.)
    formatters: { level: (label) => ({ level: label }), log: redactSecrets },
    serializers: { err: pino.stdSerializers.errWithCause },
  };
  if (config.LOG_PRETTY) {
    return pino({
      ...options,
      transport: { target: "pino-pretty", options: { colorize: true, translateTime: "SYS:standard" } },
    });
  }
  // Buffered, asynchronous writes: under load many lines share one write (a
  // line per file was a system call per file); a timer flushes whatever waits,
  // so a line is out within LOG_FLUSH_MS. pino flushes the buffer on exit
  // (including process.exit()); only a SIGKILL can lose the last lines.
  const dest = pino.destination({ dest: 1, sync: false, minLength: LOG_BUFFER_BYTES });
  // A timer runs only while lines wait: one tick after a line, and one more
  // (a flush that found a write under way is retried); idle, nothing wakes up.
  let timer: NodeJS.Timeout | undefined;
  let linesSinceTick = false;
  const tick = () => {
    timer = undefined;
    const again = linesSinceTick;
    linesSinceTick = false;
    dest.flush();
    if (again) arm();
  };
  const arm = () => {
    timer ??= setTimeout(tick, LOG_FLUSH_MS).unref();
  };
  return pino(
    {
      ...options,
      hooks: {
        streamWrite: (line) => {
          linesSinceTick = true;
          arm();
          return line;
        },
      },
    },
    dest,
  );
}

/** A logger that discards everything (tests, library use without a logger). */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}

import { pino, type Logger, type LoggerOptions } from "pino";

export type { Logger } from "pino";

/** Longest a log line waits in the buffer. */
const LOG_FLUSH_MS = 100;
const LOG_BUFFER_BYTES = 8 * 1024;

export interface LoggerConfig {
  LOG_LEVEL: string;
  LOG_PRETTY: boolean;
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
    formatters: { level: (label) => ({ level: label }) },
    // Defence in depth: config values are redacted before logging anyway.
    redact: {
      paths: ["*.NATS_TOKEN", "*.NATS_PASSWORD", "*.password", "*.pass", "*.token", "*.secretAccessKey"],
      censor: "[redacted]",
    },
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

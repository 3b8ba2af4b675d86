import { pino, type Logger, type LoggerOptions } from "pino";

export type { Logger } from "pino";

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
  // Asynchronous writes: a line costs no system call on the event loop, and
  // lines logged while a write is under way go out together in the next one.
  // pino flushes what is buffered on exit (including process.exit()); only a
  // SIGKILL can lose the last few milliseconds of lines.
  return pino(options, pino.destination({ dest: 1, sync: false }));
}

/** A logger that discards everything (tests, library use without a logger). */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}

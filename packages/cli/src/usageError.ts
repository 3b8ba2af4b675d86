import { FilerelayError, type FilerelayErrorOptions } from "@filerelay/core/internal";

/**
 * A command line that cannot be run as written (unknown command or option,
 * missing argument). The CLI prints the message with a hint and exits 2.
 * Core's code table has no usage code; CONFIG_INVALID is the closest: the
 * invocation is the command's configuration.
 */
export class UsageError extends FilerelayError {
  override name = "UsageError";
  /** The command whose help the hint points to (e.g. "dlq replay"). */
  readonly command: string | undefined;
  constructor(message: string, command?: string, options: FilerelayErrorOptions = {}) {
    super("CONFIG_INVALID", message, options);
    this.command = command;
  }
}

/**
 * What a command was asked to act on does not exist, e.g. `dlq show 42` when
 * the DLQ holds no message 42 (exit 1). Same code-table caveat as UsageError.
 */
export class NotFoundError extends FilerelayError {
  override name = "NotFoundError";
  constructor(message: string, options: FilerelayErrorOptions = {}) {
    super("CONFIG_INVALID", message, options);
  }
}

import { errnoCode, FilerelayError, SinkError } from "@filerelay/core/internal";

/**
 * FilerelayErrors keep their code (CHECKSUM_MISMATCH, CONFLICT, payload errors…);
 * a full disk or quota is DISK_SPACE_LOW (an outage: retried without using up
 * MAX_DELIVER); anything else is a transient WRITE_FAILED.
 */
export function classifyWriteError(err: unknown, message: string): FilerelayError {
  if (err instanceof FilerelayError) return err;
  const code = errnoCode(err);
  if (code === "ENOSPC" || code === "EDQUOT") {
    return new SinkError("DISK_SPACE_LOW", `${message}: the output filesystem is full (${code})`, { cause: err });
  }
  return new SinkError("WRITE_FAILED", code ? `${message} (${code})` : message, { cause: err });
}

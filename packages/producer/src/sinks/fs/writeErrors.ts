import { errnoCode, FilerelayError, SinkError } from "@filerelay/core/internal";

/** Errnos meaning the output location refuses this process, whatever the file: its permissions or mount. */
const REFUSED = new Set(["EACCES", "EPERM", "EROFS"]);

/**
 * FilerelayErrors keep their code (CHECKSUM_MISMATCH, CONFLICT, payload errors…);
 * a full disk or quota is DISK_SPACE_LOW, and a directory that refuses this
 * process (permissions, read-only mount) or an OUTPUT_DIR that became unusable
 * (`rootProblem`) is OUTPUT_NOT_WRITABLE: both are outages, retried without
 * using up MAX_DELIVER, so a forgotten chown never dead-letters the traffic.
 * Anything else is a transient WRITE_FAILED.
 */
export function classifyWriteError(err: unknown, message: string, rootProblem?: string): FilerelayError {
  if (err instanceof FilerelayError) return err;
  const code = errnoCode(err);
  if (code === "ENOSPC" || code === "EDQUOT") {
    return new SinkError("DISK_SPACE_LOW", `${message}: the output filesystem is full (${code})`, { cause: err });
  }
  if (rootProblem !== undefined) {
    return new SinkError("OUTPUT_NOT_WRITABLE", `${message}: OUTPUT_DIR ${rootProblem}`, { cause: err });
  }
  if (code !== undefined && REFUSED.has(code)) {
    return new SinkError("OUTPUT_NOT_WRITABLE", `${message} (${code}): the directory refuses this process`, {
      cause: err,
    });
  }
  return new SinkError("WRITE_FAILED", code ? `${message} (${code})` : message, { cause: err });
}

import { headersToRecord } from "../envelope.js";
import type { Logger } from "../logger.js";
import type { InFlight } from "./inflight.js";
import type { FileOutcome } from "./types.js";

export type ReportOutcome = (outcome: FileOutcome, flog: Logger) => void;

/**
 * One log line per settled message (an ack at `ackedLevel`, a retry as a
 * warning, a dead letter as an error), then the caller's `onOutcome`.
 */
export function outcomeReporter(ackedLevel: "info" | "debug", onOutcome?: (o: FileOutcome) => void): ReportOutcome {
  return (outcome, flog) => {
    const level = outcome.outcome === "acked" ? ackedLevel : outcome.outcome === "retry" ? "warn" : "error";
    const env = outcome.envelope;
    // flog already carries fileId and path: repeating them would duplicate JSON keys.
    flog[level](
      {
        size: env?.size,
        sha256: env?.sha256,
        outcome: outcome.outcome,
        attempts: outcome.deliveryCount,
        durationMs: outcome.durationMs,
        ...(outcome.code ? { code: outcome.code } : {}),
        ...(outcome.error ? { err: outcome.error } : {}),
        ...(outcome.delayMs !== undefined ? { retryInMs: outcome.delayMs } : {}),
      },
      outcome.outcome === "acked"
        ? "file handled"
        : outcome.outcome === "retry"
          ? "file failed, will be retried"
          : "file dead-lettered",
    );
    onOutcome?.(outcome);
  };
}

/** A message still in flight when the drain deadline passed, now naked for redelivery. */
export function reportHandedBack(entry: InFlight, log: Logger, onOutcome?: (o: FileOutcome) => void): void {
  let headers: Record<string, string> = {};
  try {
    headers = headersToRecord(entry.msg.headers);
  } catch {
    // undecodable headers: logged without a fileId
  }
  log.warn(
    { fileId: headers["ce-id"], seq: entry.msg.seq, outcome: "retry", code: "SHUTDOWN" },
    "drain deadline passed; file handed back for redelivery",
  );
  onOutcome?.({
    outcome: "retry",
    code: "SHUTDOWN",
    error: "drain deadline passed",
    deliveryCount: entry.msg.info.deliveryCount,
    durationMs: 0,
  });
}

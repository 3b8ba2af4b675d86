import { describeError } from "../errors.js";
import { silentLogger } from "../logger.js";
import { jetstreamNames } from "../names.js";
import { connectNats } from "../nats.js";
import { createPayloadReleaser } from "../payloadRelease.js";
import { createSemaphore } from "../semaphore.js";
import { openStatusLedger } from "../status/ledger.js";
import { ackConfirmer } from "./ackConfirm.js";
import { openGroupDurable } from "./group.js";
import { handleMessage, type MessageDeps } from "./handleMessage.js";
import { InFlightSet } from "./inflight.js";
import { pullLoop } from "./pullLoop.js";
import { outcomeReporter, reportHandedBack } from "./report.js";
import type { ConsumeFilesOptions, FileHandler } from "./types.js";

/**
 * Runs a sink: pulls envelopes from the group's durable consumer and calls
 * `handler` for each, at most `concurrency` at once. Resolve → ack (confirmed);
 * throw a permanent FilerelayError (e.g. PermanentError) → dead letter + term;
 * throw anything else → nak with exponential delay, and after `maxDeliver`
 * attempts dead letter with MAX_DELIVER_EXCEEDED — except for outages of the
 * broker or sink (ENVIRONMENTAL_CODES, e.g. DISK_SPACE_LOW, SINK_UNAVAILABLE),
 * which are retried until they end (see deliveryDecision). Invalid envelopes
 * are dead-lettered at once. Runs until `signal` aborts, then stops pulling,
 * lets in-flight handlers finish within drainTimeoutMs, naks what is left,
 * and resolves.
 */
export async function consumeFiles(options: ConsumeFilesOptions, handler: FileHandler): Promise<void> {
  const log = (options.log ?? silentLogger()).child({ group: options.group });
  const signal = options.signal ?? new AbortController().signal;
  const streamName = options.stream ?? "FILES";
  const subject = options.subject ?? "files.input";
  const concurrency = Math.max(1, options.concurrency ?? 4);
  const maxDeliver = Math.max(1, options.maxDeliver ?? 5);
  const drainTimeoutMs = options.drainTimeoutMs ?? 30_000;
  const names = jetstreamNames({ STREAM: streamName, SUBJECT: subject });

  const ownsConnection = !options.nats;
  const nc =
    options.nats ??
    (await connectNats(
      {
        NATS_URL:
          typeof options.url === "string"
            ? options.url.split(",").map((s) => s.trim())
            : [...(options.url ?? ["nats://127.0.0.1:4222"])],
      },
      { name: `filerelay-sdk-${options.group}`, log, signal },
    ));

  try {
    const inflight = new InFlightSet(signal);
    const group = await openGroupDurable(nc, {
      stream: streamName,
      subject,
      group: options.group,
      replicas: options.replicas ?? 1,
      ...(options.dlqLimits ? { dlqLimits: options.dlqLimits } : {}),
      ...(options.ackWaitMs !== undefined ? { ackWaitMs: options.ackWaitMs } : {}),
      log,
      onAckWaitChange: (ms) => inflight.keepAlive(ms),
    });
    const releaser = createPayloadReleaser(nc, { stream: streamName, bucket: names.payloadBucket, log });
    // Without a ledger of the caller's, the deployment's is used if it has one (not created here).
    const ownLedger =
      options.status === undefined
        ? await openStatusLedger(nc, { stream: streamName, by: options.group, provision: false, log })
        : undefined;
    const status = options.status === false ? undefined : (options.status ?? ownLedger);
    log.info({ stream: streamName, subject, concurrency, maxDeliver, ackWaitMs: group.ackWaitMs }, "consuming files");
    inflight.keepAlive(group.ackWaitMs);

    const deps: MessageDeps = {
      nc,
      group: options.group,
      handler,
      log,
      limits: { maxDeliver, backoffMs: options.backoffMs ?? 1000, maxBackoffMs: options.maxBackoffMs ?? 15 * 60_000 },
      allowedBuckets: options.allowedBuckets ?? [names.payloadBucket],
      payloadBucket: names.payloadBucket,
      ...(options.errorDir ? { errorDir: options.errorDir } : {}),
      objectSlots: createSemaphore(Math.min(concurrency, Math.max(1, options.objectConcurrency ?? concurrency))),
      releaser,
      releasePayloads: options.releasePayloads !== false,
      confirmAck: ackConfirmer(nc),
      inflight,
      report: outcomeReporter(options.ackedLogLevel ?? "info", options.onOutcome),
      status,
    };
    const onUnexpected = (err: unknown) =>
      log.error({ err: describeError(err) }, "unexpected failure handling a message");

    await pullLoop({
      group,
      inflight,
      concurrency,
      fetchExpiresMs: Math.max(1000, options.fetchExpiresMs ?? 5000),
      signal,
      log,
      start: (msg) => inflight.run(msg, (entry) => handleMessage(entry, deps), onUnexpected),
    });

    if (inflight.size > 0) {
      log.info({ inFlight: inflight.size, drainTimeoutMs }, "stopping: waiting for in-flight files");
      await inflight.drain(drainTimeoutMs, (entry) => reportHandedBack(entry, log, options.onOutcome));
    }
    group.stop();
    await inflight.close();
    await releaser.close();
    await ownLedger?.close();
    await nc.flush().catch(() => undefined);
    log.info("stopped consuming files");
  } finally {
    if (ownsConnection) await nc.drain().catch(() => nc.close());
  }
}

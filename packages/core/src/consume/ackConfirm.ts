import type { JsMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";

const ACK_CONFIRM_TIMEOUT_MS = 5000;

/**
 * Confirmed acks without a request per message: the ack is published, then
 * confirmed by a PING/PONG (`flush`) shared by every ack published before it
 * was sent (group commit: an ack joins the next flush that has not started).
 * The server handles a connection's messages in order, so the PONG means it
 * has the acks. When the flush fails or times out (e.g. across a reconnect),
 * the ack is sent again as a request on the message's reply subject and the
 * broker's reply is awaited (twice at most). A lost ack only means a
 * redelivery, which the sinks recognise by SHA-256 (exactly-once effect).
 */
export function ackConfirmer(nc: NatsConnection): (msg: JsMsg) => Promise<boolean> {
  let queued: Promise<boolean> | undefined;
  let last: Promise<unknown> = Promise.resolve();
  const flushOnce = async (): Promise<boolean> => {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        nc.flush().then(() => true),
        new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(false), ACK_CONFIRM_TIMEOUT_MS);
        }),
      ]);
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
    }
  };
  const nextFlush = (): Promise<boolean> => {
    if (queued) return queued;
    const p = last.then(() => {
      queued = undefined;
      return flushOnce();
    });
    queued = p;
    last = p;
    return p;
  };
  return async (msg) => {
    try {
      msg.ack();
    } catch {
      return ackRetried(nc, msg);
    }
    if (await nextFlush()) return true;
    return ackRetried(nc, msg);
  };
}

/** The ack again, as requests on the message's reply subject (the first ack may have been lost). */
async function ackRetried(nc: NatsConnection, msg: JsMsg): Promise<boolean> {
  const reply = "reply" in msg && typeof msg.reply === "string" ? msg.reply : undefined;
  if (!reply) return false;
  for (let attempt = 2; attempt <= 3; attempt++) {
    try {
      await nc.request(reply, "+ACK", { timeout: 5000 });
      return true;
    } catch {
      /* next attempt */
    }
  }
  return false;
}

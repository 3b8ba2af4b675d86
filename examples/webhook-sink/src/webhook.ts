import { Readable } from "node:stream";
import { PermanentError, SinkError, type FileContext } from "@filerelay/core";

/** CloudEvents HTTP header value: space, `"`, `%` and anything outside printable ASCII percent-encoded (UTF-8). */
const ce = (v: string) => v.replace(/[^\x21\x23\x24\x26-\x7e]/gu, (c) => encodeURIComponent(c));

/**
 * POSTs each file, streamed, in CloudEvents HTTP binary mode. 2xx → ack;
 * 5xx, 408, 429 or a network error → retried with backoff; other 4xx → dead letter.
 */
export function createWebhookHandler(url: string) {
  return async (ctx: FileContext): Promise<void> => {
    const e = ctx.envelope;
    const body = ctx.open();
    let bodyError: Error | undefined;
    body.once("error", (err) => (bodyError = err));
    const headers = {
      "ce-specversion": "1.0",
      "ce-id": e.id,
      "ce-source": ce(e.source),
      "ce-type": e.type,
      "ce-time": e.time.toISOString(),
      "ce-subject": ce(e.subject),
      "content-type": e.contentType,
      "ce-filename": ce(e.filename),
      "ce-filesize": String(e.size),
      "ce-sha256": e.sha256,
    };
    let res: Response;
    try {
      const init = { method: "POST", headers, body: Readable.toWeb(body), duplex: "half", redirect: "error" } as const;
      res = await fetch(url, { ...init, signal: ctx.signal });
    } catch (err) {
      // A payload that fails verification is the file's fault (permanent); anything else is the network's.
      throw bodyError ?? new SinkError("SINK_UNAVAILABLE", `POST ${url} failed`, { cause: err });
    } finally {
      body.destroy();
    }
    await res.body?.cancel();
    if (bodyError) throw bodyError; // the receiver answered before the (bad) payload ended
    if (res.ok) return;
    const why = `POST ${url} answered ${res.status} ${res.statusText}`;
    if (res.status >= 500 || res.status === 408 || res.status === 429) throw new SinkError("SINK_UNAVAILABLE", why);
    throw new PermanentError(why);
  };
}

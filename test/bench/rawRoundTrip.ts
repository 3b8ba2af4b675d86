import { jetstream, jetstreamManager, StorageType } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";

/**
 * Publishes `total` bytes (views of `pool`, cycled) as `chunk`-byte messages
 * into `stream` (created here, file storage: what an Object Store bucket is
 * underneath), with at most `windowBytes` of PubAcks outstanding. No hashing,
 * no files: the broker's own ingest rate for this client.
 */
export async function rawPut(
  nc: NatsConnection,
  opts: { stream: string; pool: Buffer; total: number; chunk: number; windowBytes: number },
): Promise<void> {
  const { stream, pool, total, chunk } = opts;
  const subject = `${stream.toLowerCase()}.data`;
  await (
    await jetstreamManager(nc)
  ).streams.add({
    name: stream,
    subjects: [`${stream.toLowerCase()}.>`],
    storage: StorageType.File,
    num_replicas: 1,
  });
  const js = jetstream(nc, { timeout: 60_000 });
  const window = Math.max(1, Math.floor(opts.windowBytes / chunk));
  const chunks = Math.ceil(total / chunk);
  const inFlight: Promise<unknown>[] = [];
  let off = 0;
  for (let i = 0; i < chunks; i++) {
    if (off + chunk > pool.length) off = 0;
    inFlight.push(js.publish(subject, pool.subarray(off, off + Math.min(chunk, total - i * chunk))));
    off += chunk;
    if (inFlight.length >= window) await inFlight.shift();
  }
  await Promise.all(inFlight);
}

/** Reads every message of `stream` back with an ordered consumer (what reading an object uses); returns the bytes read. */
export async function rawOrderedRead(nc: NatsConnection, stream: string, messages: number): Promise<number> {
  const oc = await jetstream(nc).consumers.get(stream);
  let got = 0;
  let n = 0;
  const iter = await oc.consume({ max_bytes: 8 * 1024 * 1024 });
  for await (const m of iter) {
    got += m.data.length;
    if (++n === messages) break;
  }
  return got;
}

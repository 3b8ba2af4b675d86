import { createServer, type Server, type Socket } from "node:net";
import type { AddressInfo } from "node:net";
import type { JetStreamClient } from "@nats-io/jetstream";
import { ConfigError, describeError, type Logger } from "@filerelay/core/internal";
import { EventTooLargeError, lineFramer, xmlFramer, type Framer } from "./framing.js";
import type { BatcherMetrics } from "./metrics.js";

/**
 * The TCP listener. Each event read from a connection is stored in the events
 * stream (JetStream PubAck) before it counts as received; the sender is told
 * how many of its events are stored with cumulative `ACK <n>\n` lines (n
 * counts this connection's events, in the order sent). Nothing else is
 * promised: events after the last ACK a sender saw may or may not be stored,
 * and it should send them again (a resend may then be batched twice). On a
 * problem the listener writes `ERR <n> <reason>\n` (the first n are stored,
 * nothing after) and closes the connection. When the sender half-closes, the
 * final ACK follows once everything it sent is stored, then the connection closes.
 */

/** Publishes in flight per connection before the socket is paused (back-pressure to the sender). */
const MAX_IN_FLIGHT = 1024;

export interface TcpInputOptions {
  host: string;
  port: number;
  subject: string;
  xml: boolean;
  maxEventBytes: number;
  js: JetStreamClient;
  log: Logger;
  metrics: BatcherMetrics;
}

export interface TcpInput extends AsyncDisposable {
  port: number;
  close(): Promise<void>;
}

export async function startTcpInput(options: TcpInputOptions): Promise<TcpInput> {
  const { log, metrics } = options;
  const connections = new Set<Connection>();
  // Half-open: after the sender's FIN the final ACK can still be written.
  const server: Server = createServer({ allowHalfOpen: true }, (socket) => {
    const c = new Connection(socket, options);
    connections.add(c);
    metrics.tcpConnections.inc();
    void c.done.finally(() => {
      connections.delete(c);
      metrics.tcpConnections.dec();
    });
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(options.port, options.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (err) {
    throw new ConfigError([`TCP_PORT: cannot listen on ${options.host}:${options.port}: ${describeError(err)}`], {
      cause: err,
    });
  }
  server.on("error", (err) => log.error({ err }, "TCP listener error"));
  const port = (server.address() as AddressInfo).port;
  log.info({ host: options.host, port, subject: options.subject }, "listening for TCP events");
  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      await Promise.all([...connections].map((c) => c.finish()));
      await stopped;
    })();
    return closing;
  };
  return { port, close, [Symbol.asyncDispose]: close };
}

class Connection {
  private readonly framer: Framer;
  private readonly pending: Promise<unknown>[] = [];
  private stored = 0;
  private acked = 0;
  private failed = false;
  /** Why reading stopped (an event too large): said once what was read before is stored. */
  private refused: string | undefined;
  private ended = false;
  private pumping: Promise<void> | undefined;
  private resolveDone!: () => void;
  readonly done = new Promise<void>((resolve) => (this.resolveDone = resolve));

  constructor(
    private readonly socket: Socket,
    private readonly options: TcpInputOptions,
  ) {
    this.framer = options.xml ? xmlFramer(options.maxEventBytes) : lineFramer(options.maxEventBytes);
    socket.on("data", (chunk: Buffer) => this.take(() => this.framer.push(chunk)));
    socket.on("end", () => {
      if (this.refused !== undefined) return;
      this.take(() => this.framer.end());
      this.ended = true;
      void this.settle();
    });
    socket.on("error", (err) => {
      options.log.debug({ err: err.message }, "TCP connection error");
      this.failed = true;
    });
    socket.on("close", () => this.resolveDone());
  }

  private take(frame: () => Buffer[]): void {
    if (this.failed || this.refused !== undefined) return;
    let events: Buffer[];
    try {
      events = frame();
    } catch (err) {
      // What came before is still stored and acknowledged; nothing after is read.
      this.refused = err instanceof EventTooLargeError ? err.message : describeError(err);
      this.socket.pause();
      events = err instanceof EventTooLargeError ? err.framed : [];
    }
    for (const e of events) {
      const stored = this.options.js.publish(this.options.subject, e);
      // Awaited in order by pump(); after a failure the rest are dropped unawaited.
      stored.catch(() => undefined);
      this.pending.push(stored);
    }
    if (this.pending.length >= MAX_IN_FLIGHT) this.socket.pause();
    this.pumping ??= this.pump().finally(() => (this.pumping = undefined));
    if (this.refused !== undefined) void this.settle();
  }

  /** Awaits the PubAcks in the order sent; `stored` only ever counts a prefix. */
  private async pump(): Promise<void> {
    while (this.pending.length > 0 && !this.failed) {
      try {
        await this.pending[0];
      } catch (err) {
        this.fail(`not stored: ${describeError(err)}`);
        return;
      }
      void this.pending.shift();
      this.stored++;
      this.options.metrics.tcpEvents.inc();
      if (this.pending.length < MAX_IN_FLIGHT / 2 && this.socket.isPaused() && this.refused === undefined) {
        this.socket.resume();
      }
      if (this.pending.length === 0 || this.stored % 256 === 0) this.writeAck();
    }
  }

  private writeAck(): void {
    if (this.acked === this.stored || this.socket.destroyed || !this.socket.writable) return;
    this.acked = this.stored;
    this.socket.write(`ACK ${this.stored}\n`);
  }

  private fail(reason: string): void {
    if (this.failed) return;
    this.failed = true;
    this.pending.length = 0;
    this.options.log.warn({ stored: this.stored, reason }, "TCP connection refused an event");
    if (this.socket.writable) this.socket.end(`ERR ${this.stored} ${reason.replace(/\s+/g, " ")}\n`);
    else this.socket.destroy();
  }

  /** After the sender's half-close (or at shutdown): the last PubAcks, the final ACK, then close. */
  async settle(): Promise<void> {
    while (this.pumping) await this.pumping;
    if (this.failed) return;
    if (this.refused !== undefined) return this.fail(this.refused);
    this.writeAck();
    this.socket.end();
  }

  /** Shutdown: read no more, store what was read, say so, close. */
  async finish(): Promise<void> {
    if (!this.ended) {
      this.socket.pause();
      this.ended = true;
      await this.settle();
    }
    await this.done;
  }
}

import { createHash, randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import { consumeFiles, envelopeToHeaders, type Envelope, type FileOutcome, type Logger } from "@filerelay/core";
import { startNats, waitFor } from "./support/index.js";

const GROUP = "mixed-ack-wait";
const SHORT_MS = 2000;
const LONG_MS = 20_000;

interface LogEntry {
  level: string;
  obj: Record<string, unknown>;
  msg: string;
}

/** A Logger that records what consumeFiles logs (the methods it uses). */
function recordingLogger(lines: LogEntry[]): Logger {
  const at =
    (level: string) =>
    (obj: Record<string, unknown> | string, msg?: string): void => {
      if (typeof obj === "string") lines.push({ level, obj: {}, msg: obj });
      else lines.push({ level, obj, msg: msg ?? "" });
    };
  const log = {
    trace: at("trace"),
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
    fatal: at("fatal"),
    child: () => log,
  };
  return log as unknown as Logger;
}

function inlineEnvelope(body: Buffer): Envelope {
  const id = randomUUID();
  return {
    id,
    source: "ack-wait",
    type: "io.filerelay.file.v1",
    time: new Date(),
    subject: `in/${id}.bin`,
    contentType: "application/octet-stream",
    filename: `${id}.bin`,
    size: body.length,
    sha256: createHash("sha256").update(body).digest("hex"),
    mtime: new Date(),
    payload: { kind: "inline" },
  };
}

interface Member {
  name: string;
  lines: LogEntry[];
  outcomes: FileOutcome[];
  done: Promise<void>;
}

/**
 * Two members of one group with different ACK_WAIT_MS, each handler blocking
 * (a slow sink) until released: every delivery must stay a first delivery for
 * three times the short ack wait, whichever member started last.
 */
describe("a group whose members were configured with different ACK_WAIT_MS", () => {
  for (const [first, second] of [
    [SHORT_MS, LONG_MS],
    [LONG_MS, SHORT_MS],
  ] as const) {
    it(`follows the durable's ack_wait in every member (started ${first} then ${second}): no redelivery`, async () => {
      await using nats = await startNats();
      const ncs: NatsConnection[] = [];
      const connectTo = async () => {
        const nc = await connect({ servers: nats.url });
        ncs.push(nc);
        return nc;
      };
      const deliveries: { member: string; id: string; deliveryCount: number }[] = [];
      let release!: () => void;
      const released = new Promise<void>((res) => {
        release = res;
      });
      const ac = new AbortController();
      const running: Promise<void>[] = [];
      const start = async (name: string, ackWaitMs: number, concurrency: number): Promise<Member> => {
        const lines: LogEntry[] = [];
        const outcomes: FileOutcome[] = [];
        const done = consumeFiles(
          {
            nats: await connectTo(),
            group: GROUP,
            ackWaitMs,
            concurrency,
            signal: ac.signal,
            log: recordingLogger(lines),
            drainTimeoutMs: 5000,
            onOutcome: (o) => outcomes.push(o),
          },
          async (ctx) => {
            deliveries.push({ member: name, id: ctx.envelope.id, deliveryCount: ctx.deliveryCount });
            await released;
          },
        );
        running.push(done);
        await waitFor(() => lines.some((l) => l.msg === "consuming files"), { message: `${name} consuming` });
        return { name, lines, outcomes, done };
      };
      const pub = await connectTo();
      const publish = async () => {
        const body = Buffer.from(randomUUID());
        const envelope = inlineEnvelope(body);
        await jetstream(pub).publish("files.input", body, { headers: envelopeToHeaders(envelope) });
        return envelope.id;
      };
      const jsm = await jetstreamManager(pub);

      try {
        // The first member holds a file (one slot: the second file must go to the other member)…
        const a = await start("first", first, 1);
        const held = await publish();
        await waitFor(() => deliveries.some((d) => d.id === held), { message: "first member holds a file" });
        // …while a member configured otherwise joins, and takes a file of its own.
        const b = await start("second", second, 2);
        const other = await publish();
        await waitFor(() => deliveries.some((d) => d.id === other && d.member === "second"), {
          message: "second member holds a file",
        });

        // The observation window itself (no event to wait for: the assertion is that none happens).
        await sleep(3 * SHORT_MS + 500);
        const info = await jsm.consumers.info("FILES", GROUP);
        expect(deliveries.map((d) => d.deliveryCount)).toEqual([1, 1]);
        expect(info.num_redelivered).toBe(0);
        expect(info.num_ack_pending).toBe(2);

        // The group ends on the larger value (raising is always safe; lowering under a busy member is not)…
        expect((info.config.ack_wait ?? 0) / 1e6).toBe(LONG_MS);
        // …and the member configured with the smaller one says so, naming both values.
        const shortMember = first === SHORT_MS ? a : b;
        const longMember = first === SHORT_MS ? b : a;
        await waitFor(
          () =>
            shortMember.lines.some(
              (l) => l.level === "warn" && l.obj.configuredAckWaitMs === SHORT_MS && l.obj.groupAckWaitMs === LONG_MS,
            ),
          { message: "mismatch warning", timeoutMs: 10_000 },
        );
        expect(longMember.lines.filter((l) => l.level === "warn")).toEqual([]);

        release();
        await waitFor(() => a.outcomes.length + b.outcomes.length === 2, { message: "both acked" });
        expect([...a.outcomes, ...b.outcomes].map((o) => o.outcome)).toEqual(["acked", "acked"]);
      } finally {
        release();
        ac.abort();
        await Promise.allSettled(running);
        for (const nc of ncs) await nc.close().catch(() => undefined);
      }
    }, 60_000);
  }
});

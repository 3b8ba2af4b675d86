import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import { startNats } from "./support/index.js";

/**
 * Our pnpm patch of @nats-io/nats-core (patches/, pinned to the exact
 * version it was written for). These fail when an upgrade or a fresh install
 * drops it: the parser's behaviour is checked on a real connection, the two
 * changes that have no outside effect but CPU by their marker.
 */
const coreLib = join(dirname(createRequire(import.meta.url).resolve("@nats-io/nats-core")), ".");

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

describe("patched @nats-io/nats-core (real nats-server)", () => {
  it("assembles a payload split across socket reads in one buffer of exactly its size, bytes intact", async () => {
    await using nats = await startNats();
    const sender = await connect({ servers: nats.url });
    const receiver = await connect({ servers: nats.url });
    try {
      // Larger than one socket read (64 KiB), so every payload arrives in parts;
      // sizes vary so that parts end at different offsets.
      const sent = Array.from({ length: 12 }, (_, i) => randomBytes(300 * 1024 + i * 4099));
      const sub = receiver.subscribe("big", { max: sent.length });
      await receiver.flush();
      for (const b of sent) sender.publish("big", b);
      await sender.flush();
      const got: Uint8Array[] = [];
      for await (const m of sub) got.push(m.data);
      expect(got.map(sha)).toEqual(sent.map(sha));
      for (const [i, data] of got.entries()) {
        expect(data.byteLength).toBe(sent[i]!.byteLength);
        // Unpatched, the buffer grew by doubling from the first part: larger than the payload.
        expect(data.buffer.byteLength).toBe(sent[i]!.byteLength);
      }
    } finally {
      await sender.close();
      await receiver.close();
    }
  });

  it("carries the write-once-per-turn and no-error-per-request changes", () => {
    expect(readFileSync(join(coreLib, "protocol.js"), "utf8")).toMatch(
      /filerelay patch: one socket write per event-loop turn[\s\S]*setImmediate\(\(\) => \{\s*this\.flushPending\(\);/,
    );
    expect(readFileSync(join(coreLib, "request.js"), "utf8")).toMatch(
      /filerelay patch: the deferred is settled[\s\S]*this\.mux\.cancel\(this\);/,
    );
  });
});

import { mkdir, mkdtemp, rename, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openStatusLedger } from "@filerelay/core/internal";
import { startNats, startService, waitFor } from "./support/index.js";
import {
  chainConsumerEnv,
  landed,
  mirrorProducerEnv,
  transformerEnv,
  startTransformer,
  transformerReady,
  writeTar,
} from "./transformer-support.js";

// SIGKILL of the transformer in the middle of a 2,000-entry archive: the
// redelivered archive is unpacked again with the same derived ids, JetStream
// drops what was already published, and every entry lands exactly once.

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "transformer-crash-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("transformer: crash mid-archive", () => {
  it("after SIGKILL and restart, each of 2,000 entries is delivered exactly once", async () => {
    await using nats = await startNats();
    const out = join(root, "out");
    await mkdir(join(root, "input"), { recursive: true });
    const n = 2000;
    await writeTar(
      join(root, "big.tar.gz"),
      (function* () {
        for (let i = 0; i < n; i++) {
          yield { name: `part-${i % 10}/entry-${i}.txt`, content: Buffer.from(`entry ${i}\n`.repeat(50 + (i % 300))) };
        }
      })(),
      true,
    );
    const tenv = transformerEnv(nats.url, root, { TRANSFORMS: "unpack", KEEP_ORIGINAL: "false", ACK_WAIT_MS: "3000" });
    const first = startTransformer(tenv);
    await transformerReady(first);
    await using consumer = startService("consumer", chainConsumerEnv(nats.url, root));
    await using producer = startService("producer", mirrorProducerEnv(nats.url, out));
    await rename(join(root, "big.tar.gz"), join(root, "input", "big.tar.gz"));

    // Killed once a part of the archive has been published and landed.
    await waitFor(async () => (await landed(out)).length >= 300, { timeoutMs: 120_000, message: "300 entries landed" });
    await first.kill();
    const before = (await landed(out)).length;
    expect(before, "killed before the end of the archive").toBeLessThan(n);

    await using second = startTransformer(tenv);
    await transformerReady(second);
    await waitFor(async () => (await landed(out)).length >= n, { timeoutMs: 180_000, message: `${n} entries landed` });
    await waitFor(() => second.logs().some((l) => l.msg === "file handled" && l.path === "big.tar.gz"), {
      timeoutMs: 60_000,
      message: "the archive acknowledged after the restart",
    });
    const written = await waitFor(
      () => {
        const lines = producer.logs().filter((l) => l.msg === "file written");
        return lines.length >= n ? lines : undefined;
      },
      { timeoutMs: 30_000, message: "the producer's outcome lines" },
    );
    // The ledger and the output tree agree: the archive has 2,000 children, each delivered once.
    const nc = await connect({ servers: nats.url });
    try {
      const ledger = await openStatusLedger(nc, { by: "test", provision: false });
      const [archive] = await ledger.history("drop", "big.tar.gz");
      expect(archive?.state).toBe("delivered");
      const children = await waitFor(
        async () => {
          const list = await ledger.list({ parent: archive!.id, limit: 10 * n });
          return list.length === n && list.every((r) => r.state === "delivered") ? list : undefined;
        },
        { timeoutMs: 60_000, intervalMs: 500, message: `${n} children delivered in the ledger` },
      );
      expect(new Set(children.map((c) => c.id))).toEqual(new Set(written.map((l) => String(l.fileId))));
      expect(new Set(children.map((c) => c.subject))).toEqual(
        new Set(Array.from({ length: n }, (_, i) => `big.tar.gz/part-${i % 10}/entry-${i}.txt`)),
      );
      expect((await ledger.get(archive!.id))?.children).toHaveLength(n);
      await ledger.close();
    } finally {
      await nc.close();
    }
    const files = await landed(out);
    expect(files).toHaveLength(n);
    expect(files.filter((f) => /-\d+\.txt$/.test(f.rel.replace(/entry-\d+\.txt$/, "")))).toEqual([]);
    expect(producer.logs().filter((l) => l.msg === "file written")).toHaveLength(n);
    expect(new Set(written.map((l) => l.fileId)).size).toBe(n);
    const expected = new Set(Array.from({ length: n }, (_, i) => `big.tar.gz/part-${i % 10}/entry-${i}.txt`));
    expect(new Set(files.map((f) => f.rel))).toEqual(expected);

    expect(await second.stop()).toBe(0);
    expect(await producer.stop()).toBe(0);
    expect(await consumer.stop()).toBe(0);
  }, 400_000);
});

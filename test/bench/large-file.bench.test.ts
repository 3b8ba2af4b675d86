import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, readdir } from "node:fs/promises";
import { join } from "node:path";
import { it } from "vitest";
import { machineInfo, memoryOf, removeDir, tempDir, timeCommand, writeLarge, writeResult } from "./benchSupport.js";
import { Pipeline } from "./pipeline.js";

const SIZE = Number(process.env.BENCH_LARGE_BYTES ?? 1024 ** 3);

async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest("hex");
}

/** Benchmark 3 (large file); `pnpm bench:large` sets BENCH_LARGE_BYTES=4GiB for the flat-memory proof. */
it(`large file: ${(SIZE / 1024 ** 2).toFixed(0)} MiB end to end, next to cp`, async () => {
  const scratch = await tempDir("large-ref");
  try {
    const src = join(scratch, "big.bin");
    await writeLarge(src, SIZE);
    const cpMs = await timeCommand("cp", [src, join(scratch, "big-copy.bin")]);
    await removeDir(join(scratch, "big-copy.bin"));
    const expected = await sha256File(src);

    await using pipe = await Pipeline.start({ consumerEnv: { STABILITY_MS: "200" } });
    await pipe.warmUp();
    const tree = join(pipe.staging, "tree");
    await mkdir(tree, { recursive: true });
    await writeLarge(join(tree, "big.bin"), SIZE);
    const ms = await pipe.relayTree(tree, 1, 60 * 60_000);
    const consumerMem = await memoryOf(pipe.consumer.pid);
    const producerMem = await memoryOf(pipe.producers[0]!.pid);
    const outputs = (await readdir(pipe.output)).filter((n) => n.endsWith(".bin"));
    const got = await sha256File(join(pipe.output, outputs[0]!));
    const mbps = SIZE / 1e6 / (ms / 1000);
    const cpMbps = SIZE / 1e6 / (cpMs / 1000);
    await writeResult({
      name: SIZE > 2 * 1024 ** 3 ? "large-file-4g" : "large-file",
      takenAt: new Date().toISOString(),
      machine: await machineInfo(),
      metrics: {
        bytes: SIZE,
        filerelayMBps: Number(mbps.toFixed(1)),
        cpMBps: Number(cpMbps.toFixed(1)),
        ratioToCp: Number((mbps / cpMbps).toFixed(3)),
        consumerPeakRssMB: consumerMem?.peakMB ?? null,
        producerPeakRssMB: producerMem?.peakMB ?? null,
        sha256Match: got === expected ? "yes" : "NO",
      },
      notes: [
        "cp copies within one filesystem (page cache); filerelay streams through the JetStream Object Store and fsyncs",
      ],
    });
    if (got !== expected) throw new Error("relayed file differs from the source");
  } finally {
    await removeDir(scratch);
  }
});

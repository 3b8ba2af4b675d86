import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { it } from "vitest";
import { machineInfo, makeFiles, writeResult } from "./benchSupport.js";
import { Pipeline } from "./pipeline.js";

const FILES = Number(process.env.BENCH_MIXED_FILES ?? 1000);
const MIN = 1024;
const MAX = 64 * 1024 ** 2;

/** Deterministic log-uniform sizes between 1 KiB and 64 MiB (fixed seed). */
function sizes(n: number, seed = 42): number[] {
  let s = seed;
  const rand = () => (s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  return Array.from({ length: n }, () =>
    Math.round(Math.exp(Math.log(MIN) + rand() * (Math.log(MAX) - Math.log(MIN)))),
  );
}

/** Benchmark 2 (mixed sizes). */
it(`mixed: ${FILES} files log-uniform 1 KiB – 64 MiB`, async () => {
  const list = sizes(FILES);
  await using pipe = await Pipeline.start({ consumerEnv: { STABILITY_MS: "200" } });
  await pipe.warmUp();
  const tree = join(pipe.staging, "tree");
  await mkdir(tree, { recursive: true });
  const total = await makeFiles(tree, FILES, (i) => list[i]!, 10);
  const ms = await pipe.relayTree(tree, FILES, 60 * 60_000);
  await writeResult({
    name: "mixed",
    takenAt: new Date().toISOString(),
    machine: await machineInfo(),
    metrics: {
      files: FILES,
      totalMB: Math.round(total / 1e6),
      MBps: Number((total / 1e6 / (ms / 1000)).toFixed(1)),
      filesPerSec: Number((FILES / (ms / 1000)).toFixed(1)),
    },
  });
});

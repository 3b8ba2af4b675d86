import { join } from "node:path";
import { it } from "vitest";
import {
  countFiles,
  hasCommand,
  machineInfo,
  makeFiles,
  removeDir,
  tempDir,
  timeCommand,
  writeResult,
} from "./benchSupport.js";
import { Pipeline } from "./pipeline.js";

const FILES = Number(process.env.BENCH_SMALL_FILES ?? 10_000);
const SIZE = 4096;

/** Benchmark 1 (small files) and 6 (producer scaling): 10,000 × 4 KiB, archive on, fsync on. */
it(`small files: ${FILES} × 4 KiB end to end, next to cp -r and rclone copy`, async () => {
  const scratch = await tempDir("small-ref");
  try {
    const ref = join(scratch, "tree");
    await makeFiles(ref, FILES, () => SIZE, 100);
    const cpMs = await timeCommand("cp", ["-r", ref, join(scratch, "cp-copy")]);
    const rcloneMs = (await hasCommand("rclone"))
      ? await timeCommand("rclone", ["copy", "--transfers", "8", ref, join(scratch, "rclone-copy")])
      : null;

    const perProducers: Record<string, number> = {};
    for (const producers of [1, 2, 4]) {
      await using pipe = await Pipeline.start({ producers, consumerEnv: { STABILITY_MS: "200" } });
      await pipe.warmUp();
      const tree = join(pipe.staging, "tree");
      await makeFiles(tree, FILES, () => SIZE, 100);
      const ms = await pipe.relayTree(tree, FILES);
      perProducers[producers] = Math.round(FILES / (ms / 1000));
      if ((await countFiles(pipe.archive)) < FILES) throw new Error("not every source file was archived");
    }
    const filesPerSec = perProducers[1]!;
    await writeResult({
      name: "small-files",
      takenAt: new Date().toISOString(),
      machine: await machineInfo(),
      metrics: {
        files: FILES,
        fileBytes: SIZE,
        filerelayFilesPerSec_1producer: filesPerSec,
        filerelayFilesPerSec_2producers: perProducers[2] ?? null,
        filerelayFilesPerSec_4producers: perProducers[4] ?? null,
        cpFilesPerSec: Math.round(FILES / (cpMs / 1000)),
        rcloneFilesPerSec: rcloneMs === null ? null : Math.round(FILES / (rcloneMs / 1000)),
        ratioToRclone: rcloneMs === null ? null : Number((filesPerSec / (FILES / (rcloneMs / 1000))).toFixed(3)),
        ratioToCp: Number((filesPerSec / (FILES / (cpMs / 1000))).toFixed(3)),
      },
      notes: [
        "end to end = from the moment the tree is renamed into INPUT_DIR to the moment the last output file exists; includes discovery, stability, publish, write with fsync, archive",
        "cp and rclone neither fsync nor archive; on 2 cores more producers add contention, not parallelism",
      ],
    });
  } finally {
    await removeDir(scratch);
  }
});

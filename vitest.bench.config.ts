import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

// `pnpm bench`: benchmarks run one at a time against real processes; not part of `pnpm test`.
export default defineConfig({
  resolve: {
    alias: { "@filerelay/core": fileURLToPath(new URL("./packages/core/src/index.ts", import.meta.url)) },
  },
  test: {
    include: ["test/bench/**/*.bench.test.ts"],
    testTimeout: 60 * 60_000,
    hookTimeout: 120_000,
    fileParallelism: false,
    pool: "forks",
  },
});

import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

// `pnpm bench`: benchmarks run one at a time against real processes; not part of `pnpm test`.
export default defineConfig({
  resolve: {
    alias: [
      {
        find: /^@filerelay\/core\/internal$/,
        replacement: fileURLToPath(new URL("./packages/core/src/internal.ts", import.meta.url)),
      },
      {
        find: /^@filerelay\/core$/,
        replacement: fileURLToPath(new URL("./packages/core/src/index.ts", import.meta.url)),
      },
    ],
  },
  test: {
    include: ["test/bench/**/*.bench.test.ts"],
    testTimeout: 60 * 60_000,
    hookTimeout: 120_000,
    fileParallelism: false,
    pool: "forks",
  },
});

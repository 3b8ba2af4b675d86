import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

// Tests import the TypeScript sources of @filerelay/core directly; services are
// spawned from their built dist/ (so `pnpm test` builds first).
const alias = [
  {
    find: /^@filerelay\/core\/internal$/,
    replacement: fileURLToPath(new URL("./packages/core/src/internal.ts", import.meta.url)),
  },
  { find: /^@filerelay\/core$/, replacement: fileURLToPath(new URL("./packages/core/src/index.ts", import.meta.url)) },
];

export default defineConfig({
  test: {
    // The JSON report is what .ci/run counts; the default reporter is for people.
    reporters: ["default", ["json", { outputFile: "test-results/vitest.json" }]],
    projects: [
      {
        resolve: { alias },
        test: {
          name: "unit",
          include: ["packages/*/src/**/*.test.ts", "examples/*/src/**/*.test.ts"],
        },
      },
      {
        resolve: { alias },
        test: {
          name: "integration",
          include: ["test/**/*.test.ts", "examples/*/test/**/*.test.ts"],
          exclude: ["test/bench/**", "test/soak/**"],
          testTimeout: 180_000,
          hookTimeout: 60_000,
          pool: "forks",
        },
      },
    ],
  },
});

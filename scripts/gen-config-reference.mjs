// Writes the configuration reference table into README.md, between the
// <!-- config-reference:start --> and <!-- config-reference:end --> markers,
// from the services' zod schemas (run `pnpm build` first). The common
// variables come from core's commonEnvShape and appear in both schemas.
// test/config-reference.test.ts fails when the README's copy is stale.
import { readFileSync, writeFileSync } from "node:fs";
import { stdout } from "node:process";
import { fileURLToPath, URL } from "node:url";
import { format, resolveConfig } from "prettier";
import { renderConfigReference, replaceConfigReference } from "../packages/core/dist/internal.js";
import { consumerEnvSchema } from "../packages/consumer/dist/index.js";
import { producerEnvSchema } from "../packages/producer/dist/index.js";
import { transformerEnvSchema } from "../packages/transformer/dist/index.js";
import { batcherEnvSchema } from "../packages/batcher/dist/index.js";
import { gatewayEnvSchema } from "../packages/gateway/dist/index.js";

const readme = fileURLToPath(new URL("../README.md", import.meta.url));
const table = renderConfigReference([
  { service: "consumer", shape: consumerEnvSchema.shape },
  { service: "producer", shape: producerEnvSchema.shape },
  { service: "transformer", shape: transformerEnvSchema.shape },
  { service: "batcher", shape: batcherEnvSchema.shape },
  { service: "gateway", shape: gatewayEnvSchema.shape },
]);
const updated = replaceConfigReference(readFileSync(readme, "utf8"), table);
// Prettier aligns the table as `pnpm lint` expects it.
const options = (await resolveConfig(readme)) ?? {};
writeFileSync(readme, await format(updated, { ...options, filepath: readme }));
stdout.write(`wrote the configuration reference into ${readme}\n`);

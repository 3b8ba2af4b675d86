import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { format, resolveConfig } from "prettier";
import { describe, expect, it } from "vitest";
import {
  CONFIG_REFERENCE_END,
  CONFIG_REFERENCE_START,
  configReferenceRows,
  extractConfigReference,
  renderConfigReference,
  replaceConfigReference,
  type ConfigSchemaSource,
} from "@filerelay/core/internal";
import { consumerEnvSchema } from "../packages/consumer/src/config.js";
import { producerEnvSchema } from "../packages/producer/src/config.js";
import { transformerEnvSchema } from "../packages/transformer/src/config.js";
import { batcherEnvSchema } from "../packages/batcher/src/config.js";
import { gatewayEnvSchema } from "../packages/gateway/src/config.js";

const README = fileURLToPath(new URL("../README.md", import.meta.url));
const sources: ConfigSchemaSource[] = [
  { service: "consumer", shape: consumerEnvSchema.shape },
  { service: "producer", shape: producerEnvSchema.shape },
  { service: "transformer", shape: transformerEnvSchema.shape },
  { service: "batcher", shape: batcherEnvSchema.shape },
  { service: "gateway", shape: gatewayEnvSchema.shape },
];
/** What the README's table is generated from: every service (in the generator's order). */
const allSources: ConfigSchemaSource[] = sources;

describe("README configuration reference", () => {
  it("is what the schemas generate (run `pnpm build && node scripts/gen-config-reference.mjs` when this fails)", async () => {
    const readme = await readFile(README, "utf8");
    const committed = extractConfigReference(readme);
    expect(committed, `README.md needs ${CONFIG_REFERENCE_START} … ${CONFIG_REFERENCE_END}`).toBeDefined();
    const regenerated = await format(replaceConfigReference(readme, renderConfigReference(allSources)), {
      ...((await resolveConfig(README)) ?? {}),
      filepath: README,
    });
    expect(committed).toBe(extractConfigReference(regenerated));
  });

  it("has a row for every variable of every service, with its default spelled as the environment would", () => {
    const rows = configReferenceRows(sources);
    const variables = new Set(rows.map((r) => r.variable));
    for (const name of [
      ...Object.keys(consumerEnvSchema.shape),
      ...Object.keys(producerEnvSchema.shape),
      ...Object.keys(transformerEnvSchema.shape),
      ...Object.keys(batcherEnvSchema.shape),
      ...Object.keys(gatewayEnvSchema.shape),
    ]) {
      expect(variables.has(name), name).toBe(true);
    }
    const row = (variable: string) => rows.filter((r) => r.variable === variable);
    // Common variables: one row for every service.
    expect(row("NATS_URL")).toEqual([
      expect.objectContaining({
        services: ["consumer", "producer", "transformer", "batcher", "gateway"],
        defaultValue: "nats://127.0.0.1:4222",
      }),
    ]);
    expect(row("HTTP_PORT")).toEqual([
      expect.objectContaining({
        defaultsByService: {
          consumer: "9464",
          producer: "9465",
          transformer: "9466",
          batcher: "9468",
          gateway: "8080",
        },
      }),
    ]);
    expect(row("INPUT_DIR")).toEqual([expect.objectContaining({ services: ["consumer"], required: true })]);
    expect(row("OUTPUT_DIR")).toEqual([expect.objectContaining({ required: false, defaultValue: null })]);
    // Defaults are written so that setting them changes nothing.
    expect(row("FILE_MODE")[0]?.defaultValue).toBe("0640");
    expect(row("INLINE_MAX_BYTES")[0]?.defaultValue).toBe("256KiB");
    expect(row("SINK_GROUPS")[0]?.defaultValue).toBe("file-producers");
    expect(row("LOG_PRETTY")[0]?.defaultValue).toBe("false");
    // The same name with a different meaning per service gets one row each.
    expect(row("CONCURRENCY").map((r) => r.services)).toEqual([["consumer"], ["producer"], ["transformer"]]);
    for (const r of rows) expect(r.description, r.variable).not.toBe("");
  });
});

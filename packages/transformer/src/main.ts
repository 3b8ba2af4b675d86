#!/usr/bin/env node
import { createLogger, redactConfig, runService } from "@filerelay/core/internal";
import { loadTransformerConfig } from "./config.js";
import { runTransformer } from "./transformer.js";

runService("transformer", async ({ signal }) => {
  const config = await loadTransformerConfig();
  const log = createLogger(config, { service: "transformer" });
  log.info({ config: redactConfig(config) }, "effective configuration");
  await runTransformer(config, { log, signal });
});

#!/usr/bin/env node
import { createLogger, redactConfig, runService } from "@filerelay/core/internal";
import { loadTransformerConfig } from "./config.js";
import { runTransformer } from "./transformer.js";

runService("filerelay-transformer", async ({ signal, setShutdownTimeout }) => {
  const config = await loadTransformerConfig();
  setShutdownTimeout(config.SHUTDOWN_TIMEOUT_MS);
  const log = createLogger(config, { service: "transformer" });
  log.info({ config: redactConfig(config) }, "effective configuration");
  await runTransformer(config, { log, signal });
});

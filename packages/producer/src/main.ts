#!/usr/bin/env node
import { createLogger, redactConfig, runService } from "@filerelay/core/internal";
import { loadProducerConfig } from "./config.js";
import { runProducer } from "./producer.js";

runService("filerelay-producer", async ({ signal, setShutdownTimeout }) => {
  const config = await loadProducerConfig();
  setShutdownTimeout(config.SHUTDOWN_TIMEOUT_MS);
  // No `group` binding here: consumeFiles() adds it to its own child logger (pino would repeat the key).
  const log = createLogger(config, { service: "producer" });
  log.info({ config: redactConfig(config) }, "effective configuration");
  await runProducer(config, { log, signal });
});

#!/usr/bin/env node
import { createLogger, redactConfig, runService } from "@filerelay/core";
import { loadProducerConfig } from "./config.js";
import { runProducer } from "./producer.js";

runService("producer", async ({ signal }) => {
  const config = await loadProducerConfig();
  const log = createLogger(config, { service: "producer", group: config.PRODUCER_GROUP });
  log.info({ config: redactConfig(config) }, "effective configuration");
  await runProducer(config, { log, signal });
});

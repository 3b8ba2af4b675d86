#!/usr/bin/env node
import { createLogger, redactConfig, runService } from "@filerelay/core/internal";
import { loadGatewayConfig } from "./config.js";
import { runGateway } from "./gateway.js";

runService("gateway", async ({ signal }) => {
  const config = await loadGatewayConfig();
  const log = createLogger(config, { service: "gateway" });
  log.info({ config: redactConfig(config) }, "effective configuration");
  await runGateway(config, { log, signal });
});

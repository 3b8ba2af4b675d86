#!/usr/bin/env node
import { createLogger, redactConfig, runService } from "@filerelay/core/internal";
import { loadGatewayConfig } from "./config.js";
import { runGateway } from "./gateway.js";

runService("filerelay-gateway", async ({ signal, setShutdownTimeout }) => {
  const config = await loadGatewayConfig();
  setShutdownTimeout(config.SHUTDOWN_TIMEOUT_MS);
  const log = createLogger(config, { service: "gateway" });
  log.info({ config: redactConfig(config) }, "effective configuration");
  await runGateway(config, { log, signal });
});

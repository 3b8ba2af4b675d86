#!/usr/bin/env node
import {
  commonEnvShape,
  connectNats,
  consumeFiles,
  createLogger,
  envInt,
  envName,
  loadConfig,
  runService,
} from "@filerelay/core";
import { z } from "zod";
import { createWebhookHandler } from "./webhook.js";

const schema = z.object({
  ...commonEnvShape({ httpPort: 0 }),
  WEBHOOK_URL: z.url({ protocol: /^https?$/, error: "expected an http(s) URL" }).describe("Where files are POSTed"),
  GROUP: envName("Durable sink group (all replicas share it)").default("webhook"),
  RETRY_BACKOFF_MS: envInt("First retry delay, doubled per attempt").default(1000),
});

runService("webhook-sink", async ({ signal }) => {
  const config = await loadConfig(schema);
  const log = createLogger(config, { service: "webhook-sink" });
  const nc = await connectNats(config, { name: `webhook-sink-${config.GROUP}`, log, signal });
  try {
    await consumeFiles(
      {
        nats: nc,
        group: config.GROUP,
        subject: config.SUBJECT,
        stream: config.STREAM,
        backoffMs: config.RETRY_BACKOFF_MS,
        drainTimeoutMs: config.SHUTDOWN_TIMEOUT_MS,
        signal,
        log,
      },
      createWebhookHandler(config.WEBHOOK_URL),
    );
  } finally {
    await nc.drain();
  }
});

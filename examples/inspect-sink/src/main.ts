#!/usr/bin/env node
import {
  commonEnvShape,
  connectNats,
  consumeFiles,
  createLogger,
  envName,
  loadConfig,
  runService,
} from "@filerelay/core";
import { z } from "zod";
import { createInspectHandler } from "./inspect.js";

const schema = z.object({
  ...commonEnvShape({ httpPort: 0 }),
  GROUP: envName("Durable sink group (all replicas share it)").default("inspect"),
  SUMMARY_PREFIX: z
    .string()
    .regex(/^[\w-]+(\.[\w-]+)*$/, "expected a subject prefix such as files.summary")
    .default("files.summary"),
});

runService("inspect-sink", async ({ signal }) => {
  const config = await loadConfig(schema);
  const log = createLogger(config, { service: "inspect-sink" });
  const nc = await connectNats(config, { name: `inspect-sink-${config.GROUP}`, log, signal });
  try {
    const { GROUP: group, SUBJECT: subject, STREAM: stream, SHUTDOWN_TIMEOUT_MS: drainTimeoutMs } = config;
    await consumeFiles(
      { nats: nc, group, subject, stream, drainTimeoutMs, signal, log },
      createInspectHandler(nc, config.SUMMARY_PREFIX),
    );
  } finally {
    await nc.drain();
  }
});

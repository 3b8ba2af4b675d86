import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { JetStreamNames } from "@filerelay/core";
import type { CliConfig } from "./cliConfig.js";

/** What every command that talks to NATS receives. */
export interface CommandContext {
  config: CliConfig;
  names: JetStreamNames;
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  json: boolean;
  /** Writes to stdout (tests capture it through the spawned process). */
  out: (text: string) => void;
  /** Progress and notices; never part of the --json document. */
  err: (text: string) => void;
  signal: AbortSignal;
}

/** One JSON document per command (`--json`), pretty enough to read. */
export function printJson(ctx: Pick<CommandContext, "out">, value: unknown): void {
  ctx.out(`${JSON.stringify(value, null, 2)}\n`);
}

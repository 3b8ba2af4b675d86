#!/usr/bin/env node
import { runCli } from "./runCli.js";

const controller = new AbortController();
let signals = 0;
const onSignal = (sig: NodeJS.Signals) => {
  // First Ctrl-C stops the command (tail ends cleanly); a second one exits at once.
  if (++signals > 1) process.exit(130);
  controller.abort(new Error(`${sig} received`));
};
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);

const status = await runCli(process.argv.slice(2), {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
  env: process.env,
  signal: controller.signal,
});
// Let stdout drain (large --json documents into a pipe) before exiting.
process.stdout.write("", () => process.exit(status));

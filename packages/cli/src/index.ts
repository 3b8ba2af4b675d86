/** @filerelay/cli as a library: the `filerelay` command's pieces, for embedding and tests. */
export * from "./runCli.js";
export * from "./cliConfig.js";
export * from "./commandContext.js";
export * from "./deadLetters.js";
export * from "./dlqCommand.js";
export * from "./sendCommand.js";
export * from "./statusCommand.js";
export * from "./tailCommand.js";

export * from "./usageError.js";
export * from "./requireStream.js";
export * from "./groupsCommand.js";

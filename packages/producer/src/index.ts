/** @filerelay/producer as a library: the pieces of the producer service, for embedding and tests. */
export * from "./config.js";
export * from "./template.js";
export * from "./organizer.js";
export * from "./producer.js";
export * from "./sinks/index.js";
export { createFsSink, TEMP_FILE_PATTERN, isTempFileName, type FsSinkOptions } from "./sinks/fs/index.js";

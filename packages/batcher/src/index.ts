/** @filerelay/batcher as a library: the pieces of the batcher service, for embedding and tests. */
export * from "./config.js";
export * from "./naming.js";
export * from "./rotation.js";
export * from "./xml.js";
export * from "./framing.js";
export * from "./render.js";
export * from "./spool.js";
export * from "./intents.js";
export * from "./batcher.js";

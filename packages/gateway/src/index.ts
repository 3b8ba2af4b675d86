/** @filerelay/gateway as a library: the pieces of the HTTP gateway, for embedding and tests. */
export * from "./config.js";
export * from "./apiKeys.js";
export * from "./paths.js";
export * from "./httpError.js";
export * from "./gateway.js";

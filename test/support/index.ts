export * from "./nats.js";
export * from "./ports.js";
export * from "./processes.js";
export * from "./wait.js";
export * from "./service.js";
export * from "./s3.js";
export * from "./chaos.js";
export * from "./tls.js";

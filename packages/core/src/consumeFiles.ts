/** consumeFiles() lives in ./consume/ (one module per responsibility); this is its public entry. */
export { consumeFiles } from "./consume/consumeFiles.js";
export { ENVIRONMENT_MAX_BACKOFF_MS } from "./consume/deliveryPolicy.js";
export type { ConsumeFilesOptions, FileContext, FileOutcome, FileResult } from "./consume/types.js";

/**
 * @filerelay/consumer: the directory source service. `main.ts` is the entry;
 * these are its parts, for embedding and tests.
 */
export * from "./config.js";
export * from "./directoryScanner.js";
export * from "./directoryWatcher.js";
export * from "./directorySource.js";
export * from "./disposer.js";

export * from "./fingerprintStore.js";
export * from "./claimStore.js";
export * from "./minHeap.js";
export * from "./disposition.js";
export * from "./fileVersion.js";
export * from "./versionPublisher.js";
export * from "./trackedFile.js";

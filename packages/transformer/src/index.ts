/** @filerelay/transformer as a library: the pieces of the transformer service, for embedding and tests. */
export * from "./config.js";
export * from "./archiveKind.js";
export * from "./derive.js";
export * from "./limits.js";
export * from "./glob.js";
export * from "./item.js";
export * from "./unpack.js";
export * from "./convert.js";
export * from "./stage.js";
export * from "./metrics.js";
export * from "./transformer.js";
export { readArchive, type ArchiveEntry, type EntryType } from "./archive/readers.js";

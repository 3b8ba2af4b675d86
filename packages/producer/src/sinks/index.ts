import type { Logger } from "@filerelay/core";
import type { ProducerConfig, SinkKind } from "../config.js";
import { createFsSink } from "./fs/index.js";
import { createS3Sink } from "./s3/index.js";
import type { Sink } from "./sink.js";

export type { Sink, SinkWriteRequest, SinkWriteResult } from "./sink.js";

/** Builds a sink from the producer configuration (no I/O: start-up work goes in `init()`). */
export type SinkFactory = (config: ProducerConfig, deps: { log: Logger }) => Sink;

/** One factory per SINK value. */
export const sinkFactories: Partial<Record<SinkKind, SinkFactory>> = {
  fs: createFsSink,
  s3: createS3Sink,
};

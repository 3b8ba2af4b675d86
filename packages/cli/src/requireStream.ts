import { isStreamNotFound, NatsError } from "@filerelay/core/internal";
import type { CommandContext } from "./commandContext.js";

/**
 * Fails with a clear message when the stream does not exist, instead of the
 * broker's "no responders": the CLI never provisions, the services do.
 */
export async function requireStream(ctx: CommandContext, stream: string): Promise<void> {
  try {
    await ctx.jsm.streams.info(stream);
  } catch (err) {
    if (isStreamNotFound(err)) {
      throw new NatsError(
        "PROVISION_FAILED",
        `stream ${stream} does not exist on this server; start a consumer or producer once (they provision it), or check --stream/STREAM`,
        { cause: err },
      );
    }
    throw err;
  }
}

import { Transform, type Readable } from "node:stream";

/**
 * The same bytes, counted as the reader takes them: `onBytes` gets the running
 * total after each chunk (it throttles itself). Errors pass through.
 */
export function countingStream(source: Readable, onBytes: (bytes: number) => void): Readable {
  let bytes = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      bytes += chunk.length;
      onBytes(bytes);
      done(null, chunk);
    },
  });
  source.on("error", (err) => counter.destroy(err));
  counter.on("close", () => {
    if (!source.destroyed) source.destroy();
  });
  return source.pipe(counter);
}

import { expect, test } from "vitest";
import { isFilerelayError, isPermanent, retry, silentLogger } from "@filerelay/core/internal";
import { createS3Sink } from "../packages/producer/src/sinks/s3/index.js";
import type { SinkWriteResult } from "../packages/producer/src/sinks/sink.js";
import { startS3, testEnvelope, testPayload, waitFor } from "./support/index.js";

/**
 * The S3 endpoint becomes unreachable in the middle of a run (connections cut,
 * new ones refused) and comes back on the same port with the same data: writes fail transiently meanwhile (the producer naks and
 * retries with backoff, modelled here by core's retry()), then everything lands
 * exactly once, with no duplicate or stray keys.
 */

const MiB = 1024 * 1024;

test.skipIf(!!process.env.FILERELAY_TEST_S3_ENDPOINT || process.env.FILERELAY_TEST_DOCKER === "1")(
  "S3 endpoint down mid-run: transient failures, then every file exactly once",
  async () => {
    await using s3 = await startS3();
    const prefix = "outage/";
    await using sink = createS3Sink(
      {
        S3_BUCKET: s3.bucket,
        S3_PREFIX: prefix,
        S3_ENDPOINT: s3.endpoint,
        S3_REGION: s3.region,
        S3_FORCE_PATH_STYLE: true,
        S3_PART_SIZE: 5 * MiB,
        S3_QUEUE_SIZE: 2,
        ON_CONFLICT: "rename",
      },
      { log: silentLogger(), credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } },
    );
    await sink.init();

    // Every 5th file is multipart, so uploads are cut mid-way too.
    const files = Array.from({ length: 30 }, (_, i) => {
      const payload = testPayload(i % 5 === 0 ? 11 * MiB + i : 50_000 + i, `outage-${i}`);
      return { payload, envelope: testEnvelope(payload), path: `2024/01/01/api-${i}.bin` };
    });
    const failures: unknown[] = [];
    const results: SinkWriteResult[] = [];
    let landed = 0;

    // Two workers, like CONCURRENCY=2: each file is retried until it lands.
    const queue = [...files];
    const worker = async () => {
      for (let f = queue.shift(); f; f = queue.shift()) {
        const { payload, envelope, path } = f;
        const result = await retry(
          () =>
            sink.write({
              envelope,
              path,
              open: () => payload.open(),
              progress: () => undefined,
              signal: new AbortController().signal,
              log: silentLogger(),
            }),
          { baseMs: 100, factor: 2, maxMs: 1000, retries: 200 },
          { shouldRetry: (err) => !isPermanent(err), onRetry: (err) => failures.push(err) },
        );
        results.push(result);
        landed++;
      }
    };
    const run = Promise.all([worker(), worker()]);

    await waitFor(() => landed >= 6, { timeoutMs: 60_000, message: "the first files to land" });
    await s3.stop();
    await waitFor(() => failures.length >= 6, { timeoutMs: 60_000, message: "writes to fail while S3 is down" });
    const landedWhileDown = landed;
    await s3.restart();
    await run;

    const codes = [...new Set(failures.map((e) => (isFilerelayError(e) ? e.code : String(e))))];
    const duplicates = results.filter((r) => r.outcome === "duplicate").length;
    console.info(
      `outage: ${failures.length} transient failures (${codes.join(", ")}), ${landedWhileDown}/${files.length} landed before the endpoint came back, ${duplicates} found already complete on retry`,
    );
    expect(landedWhileDown, "files were still pending when the store came back").toBeLessThan(files.length);
    for (const err of failures) {
      expect(isFilerelayError(err), String(err)).toBe(true);
      expect(isPermanent(err), String(err)).toBe(false);
    }
    // Every failure is an outage or S3 code (or a verification failure), never a silent success.
    expect(
      codes.every((c) => c === "SINK_UNAVAILABLE" || c.startsWith("S3_")),
      codes.join(),
    ).toBe(true);

    const expectedKeys = files.map((f) => `${prefix}${f.path}`).sort();
    expect(await s3.listKeys()).toEqual(expectedKeys);
    for (const f of files) {
      expect(await s3.describe(`${prefix}${f.path}`), f.path).toMatchObject({
        size: f.payload.size,
        sha256: f.payload.sha256,
      });
    }
    expect(results.every((r) => r.outcome === "written" || r.outcome === "duplicate")).toBe(true);
  },
);

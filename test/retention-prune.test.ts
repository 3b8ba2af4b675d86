/**
 * ARCHIVE_RETENTION_DAYS / ERROR_RETENTION_DAYS: at start, the consumer
 * removes ARCHIVE_DIR and ERROR_DIR day folders past retention, and the
 * producer its ERROR_DIR's; today's folder, recent ones, and anything not
 * named YYYY-MM-DD stay. Unset keeps everything.
 */
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { startNats, startService, waitFor, type RunningService } from "./support/index.js";
import { consumerReady, producerReady } from "./support/pipeline.js";

// Services run from packages/*/dist: `pnpm build` first (pnpm test does).

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "retention-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const day = (daysAgo: number) => new Date(Date.now() - daysAgo * 86_400_000).toISOString().slice(0, 10);

/** A dated tree: folders `daysAgo` old holding a nested file, plus entries that are not day folders. */
async function seed(dir: string, ages: number[]): Promise<void> {
  for (const age of ages) {
    await mkdir(join(dir, day(age), "sub"), { recursive: true });
    await writeFile(join(dir, day(age), "sub", "f.txt"), `${age}\n`);
  }
  await mkdir(join(dir, "notes"), { recursive: true });
  await writeFile(join(dir, "README.txt"), "operator's file\n");
}

const removedLines = (svc: RunningService) => svc.logs().filter((l) => l.msg === "removed a day folder past retention");

describe("retention of dated folders", () => {
  it("the consumer prunes ARCHIVE_DIR and ERROR_DIR, the producer its ERROR_DIR, at start", async () => {
    await using nats = await startNats();
    const input = join(root, "in");
    const archive = join(root, "archive");
    const consumerErrors = join(root, "consumer-errors");
    const producerErrors = join(root, "producer-errors");
    const untouched = join(root, "producer-errors-kept");
    await mkdir(input);
    await seed(archive, [0, 1, 7, 8, 400]);
    await seed(consumerErrors, [0, 1, 2, 30]);
    await seed(producerErrors, [0, 3, 4]);
    await seed(untouched, [0, 400]);

    await using consumer = startService("consumer", {
      NATS_URL: nats.url,
      INPUT_DIR: input,
      ARCHIVE_DIR: archive,
      ERROR_DIR: consumerErrors,
      ARCHIVE_RETENTION_DAYS: "7",
      ERROR_RETENTION_DAYS: "1",
    });
    await using producer = startService("producer", {
      NATS_URL: nats.url,
      OUTPUT_DIR: join(root, "out"),
      ERROR_DIR: producerErrors,
      ERROR_RETENTION_DAYS: "3",
    });
    // A second producer group without retention keeps everything.
    await using keeper = startService("producer", {
      NATS_URL: nats.url,
      PRODUCER_GROUP: "keeper",
      OUTPUT_DIR: join(root, "out2"),
      ERROR_DIR: untouched,
    });
    await Promise.all([consumerReady(consumer), producerReady(producer), producerReady(keeper)]);
    await waitFor(() => removedLines(consumer).length >= 4 && removedLines(producer).length >= 1, {
      timeoutMs: 10_000,
      message: "the day folders past retention to be removed",
    });

    const list = async (dir: string) => (await readdir(dir)).sort();
    expect(await list(archive)).toEqual([day(7), day(1), day(0), "README.txt", "notes"].sort());
    expect(await list(consumerErrors)).toEqual([day(1), day(0), "README.txt", "notes"].sort());
    expect(await list(producerErrors)).toEqual([day(3), day(0), "README.txt", "notes"].sort());
    expect(await list(untouched)).toEqual([day(400), day(0), "README.txt", "notes"].sort());
    expect(
      removedLines(consumer)
        .map((l) => `${String(l.dir)} ${String(l.folder)}`)
        .sort(),
    ).toEqual(
      [`ARCHIVE_DIR ${day(8)}`, `ARCHIVE_DIR ${day(400)}`, `ERROR_DIR ${day(2)}`, `ERROR_DIR ${day(30)}`].sort(),
    );
    expect(removedLines(keeper)).toEqual([]);
  });
});

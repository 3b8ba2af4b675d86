import { open, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { startNats, waitFor } from "./support/index.js";
import {
  consumerEnv,
  consumerStarted,
  listFiles,
  makeConsumerDirs,
  openStreamReader,
  outcomes,
  sha256,
  startConsumer,
  writeRel,
} from "./consumer-support.js";

// Services run from packages/*/dist: `pnpm build` first (pnpm test does).

describe("consumer service: lifecycle", () => {
  it("SIGTERM during a large upload: exits 0, publishes nothing, leaves the file untouched and no payload behind", async () => {
    await using nats = await startNats();
    await using dirs = await makeConsumerDirs();
    await using stream = await openStreamReader(nats.url);
    await using svc = startConsumer(consumerEnv(nats.url, dirs, { PAYLOAD_CHUNK_BYTES: "64KiB" }));
    await consumerStarted(svc);
    const path = join(dirs.input, "huge.bin");
    const fh = await open(path, "w");
    const block = Buffer.alloc(1024 * 1024, 0x5a);
    for (let i = 0; i < 300; i++) await fh.write(block);
    await fh.close();
    const digest = sha256(await readFile(path));

    // The upload is under way once payload chunks reach the object store's stream.
    await waitFor(async () => (await stream.jsm.streams.info("OBJ_FILES_payloads")).state.bytes > 0, {
      timeoutMs: 20_000,
      message: "payload chunks being uploaded",
    });
    expect(await svc.stop()).toBe(0);
    expect(svc.logs().some((l) => l.msg === "consumer stopped")).toBe(true);
    expect(outcomes(svc, "published")).toEqual([]);
    expect(await stream.count()).toBe(0);
    expect(await listFiles(dirs.input)).toEqual(["huge.bin"]);
    expect(sha256(await readFile(path))).toBe(digest);
    expect(await listFiles(dirs.archive)).toEqual([]);
    expect(await listFiles(dirs.error)).toEqual([]);
    // The aborted upload's chunks were purged.
    expect((await stream.jsm.streams.info("OBJ_FILES_payloads")).state.messages).toBe(0);
  });

  it("without ERROR_DIR a failed file stays, is logged once at error level, and is retried only once it changes", async () => {
    await using nats = await startNats();
    await using dirs = await makeConsumerDirs();
    await using stream = await openStreamReader(nats.url);
    await using svc = startConsumer(consumerEnv(nats.url, { input: dirs.input }, { MAX_FILE_SIZE: "100" }));
    await consumerStarted(svc);
    await writeRel(dirs.input, "big.txt", "x".repeat(200));
    await svc.waitForLog((l) => l.msg === "file failed; left in place until it changes", 10_000);
    // Files written after it go through: by then big.txt has been seen by several scans.
    for (let i = 0; i < 3; i++) {
      await writeRel(dirs.input, `later-${i}.txt`, "ok");
      await stream.waitFor(i + 1);
    }
    const failures = svc.logs().filter((l) => l.level === "error");
    expect(failures).toHaveLength(1);
    expect(failures[0]).toMatchObject({ path: "big.txt", code: "FILE_TOO_LARGE", outcome: "failed" });
    expect(await listFiles(dirs.input)).toContain("big.txt");

    await writeFile(join(dirs.input, "big.txt"), "small now");
    const msgs = await stream.waitFor(4);
    expect(msgs[3]!.headers["ce-subject"]).toBe("big.txt");
    expect(msgs[3]!.headers["ce-sha256"]).toBe(sha256("small now"));
  });
});

import { execFile } from "node:child_process";
import { mkdir, mkdtemp, rm, statfs } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { startNats, startService, tmpfsMountWorks, waitFor } from "./support/index.js";
import {
  createPublisher,
  defaultOutputName,
  listFiles,
  outcomeLines,
  producerEnv,
  readDeadLetters,
  sdkLines,
  testFile,
} from "./producer-support.js";

/*
 * A file larger than the whole output filesystem can never be written there:
 * it is dead-lettered at once (FILE_EXCEEDS_DISK), not retried as
 * DISK_SPACE_LOW every 30 s forever, whether the free-space pre-check
 * (DISK_SPACE_FACTOR) sees it or, with the pre-check off, the write runs into
 * ENOSPC. OUTPUT_DIR is a 256 KiB tmpfs (needs `mount`; skipped without it).
 */

const run = promisify(execFile);
const KiB = 1024;
const external = !!process.env.FILERELAY_TEST_NATS_URL || process.env.FILERELAY_TEST_DOCKER === "1";

const mountWorks = !external && (await tmpfsMountWorks());

let root: string;
let mounted: string | undefined;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "oversized-"));
});
afterEach(async () => {
  if (mounted) await run("umount", ["-l", mounted]).catch(() => undefined);
  mounted = undefined;
  await rm(root, { recursive: true, force: true });
});

describe("a file larger than the whole output filesystem", () => {
  it.skipIf(!mountWorks)(
    "is dead-lettered with FILE_EXCEEDS_DISK, with and without the free-space pre-check; smaller files still land",
    async () => {
      const disk = join(root, "disk");
      await mkdir(disk);
      await run("mount", ["-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", disk]);
      mounted = disk;
      const s = await statfs(disk);
      const capacity = s.blocks * s.bsize;

      await using nats = await startNats();
      await using pub = await createPublisher(nats.url);
      const env = (group: string, factor: string) =>
        producerEnv(nats.url, {
          PRODUCER_GROUP: group,
          OUTPUT_DIR: join(disk, group),
          ORGANIZE_BY: "none",
          DISK_SPACE_FACTOR: factor,
          LOG_LEVEL: "info",
        });
      await using precheck = startService("producer", env("precheck", "2"));
      await using nocheck = startService("producer", env("nocheck", "0"));
      for (const svc of [precheck, nocheck]) {
        await svc.waitForLog((l) => l.msg === "consuming files", 30_000, "producer ready");
      }

      const big = testFile("in/big.bin", Buffer.alloc(capacity + 64 * KiB, 7));
      const small = testFile("in/small.bin", Buffer.alloc(10 * KiB, 3));
      await pub.publish(big);
      await pub.publish(small);

      for (const group of ["precheck", "nocheck"]) {
        const [dead] = await waitFor(
          async () => {
            const d = await readDeadLetters(pub.nc, group);
            return d.length > 0 ? d : undefined;
          },
          { message: `${group}: the oversized file's dead letter` },
        );
        expect(dead!.code).toBe("FILE_EXCEEDS_DISK");
        expect(dead!.headers["ce-id"]).toBe(big.envelope.id);
        expect(dead!.error).toContain(`the file (${big.content.length} bytes) is larger than the whole filesystem`);
        expect(dead!.error).toContain(`(${capacity} bytes)`);
        expect(dead!.deliveries).toBe(1);
      }
      for (const svc of [precheck, nocheck]) {
        await waitFor(() => outcomeLines(svc).length === 1, { message: "the small file written" });
        expect(outcomeLines(svc)[0]).toMatchObject({ fileId: small.envelope.id, outcome: "written" });
        // Dead-lettered on its first delivery: never retried as a full disk. (The small file may be:
        // while the big one's write fills the disk, the small one can meet ENOSPC and wait its turn.)
        expect(sdkLines(svc, "retry").filter((l) => l.fileId === big.envelope.id)).toEqual([]);
      }
      // Only the small files are on the disk: no temp file left by the write that ran out of space.
      expect(await listFiles(disk)).toEqual([
        `nocheck/${defaultOutputName(small.envelope)}`,
        `precheck/${defaultOutputName(small.envelope)}`,
      ]);
    },
    60_000,
  );
});

import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, stat, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { startNats, startService, waitFor } from "./support/index.js";
import { treeHashes } from "./support/pipeline.js";
import { landed } from "./transformer-support.js";
import {
  buildZip,
  chainConsumerEnv,
  deflatedZeros,
  handled,
  mirrorProducerEnv,
  sampleRss,
  transformerEnv,
  startTransformer,
  transformerReady,
  writeTar,
} from "./transformer-support.js";

// Hostile archives through consumer → transformer → producer: each is
// dead-lettered by the transformer with its code, nothing of it is published,
// nothing lands outside the output tree, and the transformer stays small.

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "transformer-hostile-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const MiB = 1024 * 1024;

describe("transformer: hostile archives", () => {
  it("dead-letters ../, absolute, link, bomb, 100,001-entry and truncated archives with their codes; RSS ≤ 250 MB", async () => {
    const staging = join(root, "staging");
    await mkdir(staging, { recursive: true });
    const escapeName = `escape-${Date.now()}.txt`;
    const absTarget = join(root, "abs-target.txt");
    const ok = (name: string) => ({ name, content: Buffer.from(`${name}\n`) });

    await writeTar(
      join(staging, "dotdot.tar.gz"),
      [ok("fine.txt"), { name: `../${escapeName}`, content: Buffer.from("x") }],
      true,
    );
    await writeTar(
      join(staging, "absolute.tar"),
      [ok("fine.txt"), { name: absTarget, content: Buffer.from("x") }],
      false,
    );
    await writeTar(
      join(staging, "symlink.tar.gz"),
      [ok("fine.txt"), { name: "link", type: "symlink", linkname: "/etc/passwd" }],
      true,
    );
    await writeFile(
      join(staging, "symlink.zip"),
      buildZip([
        { name: "fine.txt", content: Buffer.from("ok") },
        { name: "link", content: Buffer.from("/etc/passwd"), stored: true, mode: 0o120777 },
      ]),
    );
    await writeFile(
      join(staging, "dotdot.zip"),
      buildZip([
        { name: "fine.txt", content: Buffer.from("ok") },
        { name: `..\\${escapeName}`, content: Buffer.from("x") },
      ]),
    );
    // The bomb: a zip of a few KiB holding a zip whose 160 entries share one
    // 64 MiB run of zeros: 10 GiB when inflated.
    const zeros = deflatedZeros(64 * MiB);
    const inner = buildZip([
      { name: "zeros-0.bin", raw: zeros },
      ...Array.from({ length: 159 }, (_, i) => ({ name: `zeros-${i + 1}.bin`, sameDataAs: 0 })),
    ]);
    const bomb = buildZip([{ name: "inner.zip", content: inner }]);
    await writeFile(join(staging, "bomb.zip"), bomb);
    expect(bomb.length).toBeLessThan(64 * 1024);
    // 100,001 tiny entries (EXTRACT_MAX_FILES is 100,000 by default).
    await writeTar(
      join(staging, "many.tar.gz"),
      (function* () {
        for (let i = 0; i <= 100_000; i++) yield { name: `d${i % 100}/f${i}.txt`, content: Buffer.from("x") };
      })(),
      true,
    );
    // Truncated: a good tar.gz cut in the middle.
    const src = join(root, "src");
    await mkdir(src, { recursive: true });
    for (let i = 0; i < 20; i++) await writeFile(join(src, `f${i}.txt`), `${i}\n`.repeat(20_000 + i));
    execFileSync("tar", ["-czf", join(staging, "truncated.tar.gz"), "-C", src, "."]);
    await truncate(
      join(staging, "truncated.tar.gz"),
      Math.floor((await stat(join(staging, "truncated.tar.gz"))).size / 2),
    );
    // And one good archive: the service keeps working.
    await writeTar(join(staging, "good.tar.gz"), [ok("a/one.txt"), ok("two.txt")], true);

    const expectedCodes: Record<string, string> = {
      "dotdot.tar.gz": "ARCHIVE_UNSAFE_PATH",
      "absolute.tar": "ARCHIVE_UNSAFE_PATH",
      "symlink.tar.gz": "ARCHIVE_UNSAFE_PATH",
      "symlink.zip": "ARCHIVE_UNSAFE_PATH",
      "dotdot.zip": "ARCHIVE_UNSAFE_PATH",
      "bomb.zip": "ARCHIVE_TOO_LARGE",
      "many.tar.gz": "ARCHIVE_TOO_LARGE",
      "truncated.tar.gz": "ARCHIVE_CORRUPT",
    };

    await using nats = await startNats();
    const out = join(root, "out");
    await mkdir(join(root, "input"), { recursive: true });
    await using transformer = startTransformer(
      transformerEnv(nats.url, root, { TRANSFORMS: "unpack", KEEP_ORIGINAL: "false", CONCURRENCY: "2" }),
    );
    await transformerReady(transformer);
    const rss = sampleRss(transformer.pid);
    await using consumer = startService("consumer", chainConsumerEnv(nats.url, root));
    await using producer = startService("producer", mirrorProducerEnv(nats.url, out));
    for (const name of [...Object.keys(expectedCodes), "good.tar.gz"]) {
      execFileSync("cp", [join(staging, name), join(root, "input", name)]);
    }

    const dead = await waitFor(
      () => {
        const lines = handled(transformer, "dead-lettered");
        return lines.length >= Object.keys(expectedCodes).length ? lines : undefined;
      },
      { timeoutMs: 240_000, message: "every hostile archive dead-lettered" },
    );
    rss.stop();
    const codes = Object.fromEntries(dead.map((l) => [l.path as string, l.code as string]));
    expect(codes).toEqual(expectedCodes);
    for (const l of dead) expect(l.attempts, `${String(l.path)} is refused at once, not retried`).toBe(1);
    const reasons = Object.fromEntries(dead.map((l) => [l.path as string, String(l.err)]));
    expect(reasons["bomb.zip"]).toMatch(/EXTRACT_MAX_RATIO|compression bomb/);
    expect(reasons["many.tar.gz"]).toMatch(/EXTRACT_MAX_FILES \(100000\)/);
    expect(reasons["symlink.tar.gz"]).toMatch(/symlink/);
    expect(reasons["truncated.tar.gz"]).toMatch(/unexpected end|truncated|Unexpected end/i);

    // Only the good archive's entries land; nothing of a refused archive, nothing outside the output tree.
    await waitFor(async () => (await landed(out)).length >= 2, { timeoutMs: 60_000, message: "good archive landed" });
    expect((await landed(out)).map((f) => f.rel)).toEqual(["good.tar.gz/a/one.txt", "good.tar.gz/two.txt"]);
    expect(existsSync(absTarget)).toBe(false);
    for (const dir of [
      root,
      join(root, ".."),
      out,
      join(out, ".."),
      join(root, "scratch"),
      join(root, "scratch", ".."),
    ]) {
      expect(existsSync(join(dir, escapeName)), `${escapeName} in ${dir}`).toBe(false);
    }
    // The dead letters are on record with their reasons (ERROR_DIR copies of the envelopes).
    const errorFiles = await treeHashes(join(root, "transformer-error"));
    const envelopes = errorFiles.filter((f) => f.rel.endsWith(".envelope.json"));
    expect(envelopes).toHaveLength(Object.keys(expectedCodes).length);
    const recorded = await Promise.all(
      envelopes.map(async (f) => (await readFile(join(root, "transformer-error", f.rel), "utf8")).length),
    );
    expect(recorded.every((n) => n > 0)).toBe(true);
    // Scratch space is cleaned up after each refusal.
    expect(await treeHashes(join(root, "scratch"))).toEqual([]);

    console.log(`transformer RSS peak ${Math.round(rss.max() / MiB)} MiB`, reasons);
    expect(rss.max(), `transformer RSS peaked at ${Math.round(rss.max() / MiB)} MiB`).toBeLessThanOrEqual(
      250 * 1000 * 1000,
    );
    expect(rss.max()).toBeGreaterThan(0);
    expect(await transformer.stop()).toBe(0);
    expect(await producer.stop()).toBe(0);
    expect(await consumer.stop()).toBe(0);
  }, 400_000);
});

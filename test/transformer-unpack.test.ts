import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { startNats, startService, waitFor } from "./support/index.js";
import { treeHashes } from "./support/pipeline.js";
import { landed } from "./transformer-support.js";
import {
  chainConsumerEnv,
  mirrorProducerEnv,
  transformerEnv,
  startTransformer,
  transformerReady,
} from "./transformer-support.js";

// consumer → transformer (unpack) → producer (SUBJECT=files.processed), as built services.

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "transformer-unpack-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

/** A small tree: nested folders, an empty file, files above the inline limit (Object Store), text and binary. */
async function makeTree(dir: string): Promise<void> {
  const files: [string, Buffer][] = [
    ["reports/q1.csv", Buffer.from("region,amount\nnorth,1\nsouth,2\n")],
    ["reports/2024/q2.csv", Buffer.from("region,amount\neast,3\n")],
    ["images/big.bin", randomBytes(700_000)],
    ["images/deep/a/b/c/small.bin", randomBytes(3000)],
    ["empty.txt", Buffer.alloc(0)],
    ["README", Buffer.from("no extension\n")],
    ["spaces in name.txt", Buffer.from("hello\n")],
  ];
  for (const [rel, content] of files) {
    await mkdir(dirname(join(dir, rel)), { recursive: true });
    await writeFile(join(dir, rel), content);
  }
}

describe("transformer: unpack end to end", () => {
  it("lands every entry of a .tar.gz, a .zip and a .gz byte-identical to tar -x / unzip / gunzip, structure kept", async () => {
    await using nats = await startNats();
    const src = join(root, "src");
    await makeTree(src);
    const staging = join(root, "staging");
    await mkdir(staging, { recursive: true });
    execFileSync("tar", ["-czf", join(staging, "bundle.tar.gz"), "-C", src, "."]);
    execFileSync("zip", ["-qr", join(staging, "bundle.zip"), "."], { cwd: src });
    await writeFile(join(staging, "data.csv"), randomBytes(400_000).toString("hex"));
    execFileSync("gzip", [join(staging, "data.csv")]);

    // The references: what the standard tools make of the same archives.
    const ref = join(root, "ref");
    await mkdir(join(ref, "bundle.tar.gz"), { recursive: true });
    await mkdir(join(ref, "bundle.zip"), { recursive: true });
    await mkdir(join(ref, "data.csv.gz"), { recursive: true });
    execFileSync("tar", ["-xzf", join(staging, "bundle.tar.gz"), "-C", join(ref, "bundle.tar.gz")]);
    execFileSync("unzip", ["-q", join(staging, "bundle.zip"), "-d", join(ref, "bundle.zip")]);
    execFileSync("sh", [
      "-c",
      `gunzip -c "${join(staging, "data.csv.gz")}" > "${join(ref, "data.csv.gz", "data.csv")}"`,
    ]);

    const out = join(root, "out");
    await mkdir(join(root, "input"), { recursive: true });
    await using transformer = startTransformer(
      transformerEnv(nats.url, root, { TRANSFORMS: "unpack", KEEP_ORIGINAL: "false" }),
    );
    await transformerReady(transformer);
    await using consumer = startService("consumer", chainConsumerEnv(nats.url, root));
    await using producer = startService("producer", mirrorProducerEnv(nats.url, out));
    for (const name of ["bundle.tar.gz", "bundle.zip", "data.csv.gz"]) {
      execFileSync("cp", [join(staging, name), join(root, "input", name)]);
    }

    const expected = await treeHashes(ref);
    expect(expected.length).toBe(15);
    await waitFor(async () => (await landed(out)).length >= expected.length, {
      timeoutMs: 120_000,
      message: `${expected.length} entries landed`,
    });
    expect(await landed(out)).toEqual(expected);
    // Log lines reach us a little after the files (buffered logging).
    const written = await waitFor(
      () => {
        const lines = producer.logs().filter((l) => l.msg === "file written");
        return lines.length >= expected.length ? lines : undefined;
      },
      { timeoutMs: 10_000, message: "the producer's outcome lines" },
    );
    expect(written).toHaveLength(expected.length);
    expect(new Set(written.map((l) => l.fileId)).size).toBe(expected.length);

    expect(await producer.stop()).toBe(0);
    expect(await transformer.stop()).toBe(0);
    expect(await consumer.stop()).toBe(0);
  }, 180_000);
});

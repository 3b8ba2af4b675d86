import { mkdir, readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  consumerEnv,
  consumerStarted,
  makeConsumerDirs,
  outcomes,
  startConsumer,
  writeRel,
} from "./consumer-support.js";
import { startNats, waitFor } from "./support/index.js";

// Services run from packages/*/dist: `pnpm build` first (pnpm test does).

describe("consumer: subdirectories emptied by archiving", () => {
  it("are removed once empty for STABILITY_MS; INPUT_DIR, busy and operator-made empty directories stay", async () => {
    await using nats = await startNats();
    await using dirs = await makeConsumerDirs("consumer-empty-dirs-");
    await mkdir(join(dirs.input, "made-by-operator"));
    await using svc = startConsumer(
      consumerEnv(nats.url, dirs, { SINK_GROUPS: "g", STABILITY_MS: "300", POLL_INTERVAL_MS: "250" }),
    );
    await consumerStarted(svc);
    for (const rel of ["2026/12/01/a.csv", "2026/12/01/b.csv", "2026/12/02/c.csv", "partner/x/d.txt", "keep/e.txt"]) {
      await writeRel(dirs.input, rel, `${rel}\n`);
    }
    await waitFor(() => outcomes(svc, "published").length === 5, { message: "5 files published" });
    // A new file in keep/ after the others were archived: that directory is in use again.
    await writeRel(dirs.input, "keep/late.txt", "late\n");
    await waitFor(() => outcomes(svc, "published").length === 6, { message: "the late file published" });
    await writeRel(dirs.input, "keep/later.txt", "stays until published\n");

    await waitFor(
      async () => {
        const left = (await readdir(dirs.input)).sort();
        return left.length === 2 || left.length === 3 ? left : undefined;
      },
      { timeoutMs: 30_000, message: "the emptied date and partner directories to go" },
    );
    await waitFor(async () => !(await readdir(dirs.input)).includes("2026"), {
      timeoutMs: 30_000,
      message: "2026/ removed once its children were",
    });
    const left = (await readdir(dirs.input)).sort();
    expect(left.filter((d) => d !== "keep")).toEqual(["made-by-operator"]);
    expect((await stat(dirs.input)).isDirectory()).toBe(true);
    // Everything was archived with its relative path.
    const day = new Date().toISOString().slice(0, 10);
    expect((await readdir(join(dirs.archive, day, "2026/12/01"))).sort()).toEqual(["a.csv", "b.csv"]);
    expect(await readdir(join(dirs.archive, day, "partner/x"))).toEqual(["d.txt"]);
  });
});

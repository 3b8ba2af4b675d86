import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ConfigError } from "@filerelay/core";
import { consumerEnvSchema, loadConsumerConfig } from "./config.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "consumer-config-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("consumer configuration", () => {
  it("has DESIGN §4 defaults; SOURCE defaults to INPUT_DIR's base name", async () => {
    const c = await loadConsumerConfig({ INPUT_DIR: dir });
    expect(c).toMatchObject({
      SOURCE: basename(dir),
      FILE_PATTERN: "**/*",
      EXCLUDE_PATTERNS: [],
      POLL_INTERVAL_MS: 5000,
      STABILITY_MS: 2000,
      DELETE_AFTER_PROCESSING: false,
      MAX_RETRIES: 4,
      RETRY_BACKOFF_MS: 1000,
      // Not DESIGN §4's 4: see docs/benchmarks.md (issue 10).
      CONCURRENCY: 32,
      LARGE_FILE_CONCURRENCY: 4,
      FOLLOW_SYMLINKS: false,
      INLINE_MAX_BYTES: 262144,
      PAYLOAD_CHUNK_BYTES: 1048576,
      SINK_GROUPS: ["file-producers"],
      HTTP_PORT: 9464,
    });
    expect(c.READY_MARKER_SUFFIX).toBeUndefined();
    expect(c.ARCHIVE_DIR).toBeUndefined();
    expect(c.ERROR_DIR).toBeUndefined();
    expect(c.MAX_FILE_SIZE).toBeUndefined();
    expect(Object.isFrozen(c)).toBe(true);
  });

  it("parses lists and sizes", async () => {
    const c = await loadConsumerConfig({
      INPUT_DIR: dir,
      SOURCE: "api",
      EXCLUDE_PATTERNS: "*.bak, tmp/",
      MAX_FILE_SIZE: "10MiB",
      SINK_GROUPS: "file-producers,audit",
    });
    expect(c.SOURCE).toBe("api");
    expect(c.EXCLUDE_PATTERNS).toEqual(["*.bak", "tmp/"]);
    expect(c.MAX_FILE_SIZE).toBe(10 * 1024 * 1024);
    expect(c.SINK_GROUPS).toEqual(["file-producers", "audit"]);
  });

  it("describes every variable (the README table is generated from these)", () => {
    for (const [name, field] of Object.entries(consumerEnvSchema.shape)) {
      const description =
        field.description ?? (field as { unwrap?: () => { description?: string } }).unwrap?.().description;
      expect(description, name).toBeTruthy();
    }
  });

  it("reports directory problems with the variable names", async () => {
    const err = await loadConsumerConfig({ INPUT_DIR: join(dir, "missing"), ERROR_DIR: dir, ARCHIVE_DIR: dir }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).problems).toEqual([`INPUT_DIR: ${join(dir, "missing")} does not exist`]);
    const same = await loadConsumerConfig({ INPUT_DIR: dir, ARCHIVE_DIR: dir }).catch((e: unknown) => e);
    expect((same as ConfigError).problems).toEqual(["ARCHIVE_DIR: must differ from INPUT_DIR"]);
  });
});

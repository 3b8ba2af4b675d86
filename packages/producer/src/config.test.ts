import { describe, expect, it } from "vitest";
import { ConfigError } from "@filerelay/core";
import { loadProducerConfig, producerEnvSchema } from "./config.js";

const load = (env: Record<string, string>) => loadProducerConfig(env, { envFile: null });
const problemsOf = async (env: Record<string, string>) => {
  const err = await load(env).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(ConfigError);
  return (err as ConfigError).problems;
};

describe("producer configuration", () => {
  it("applies every documented default", async () => {
    const cfg = await load({ OUTPUT_DIR: "/out" });
    expect(cfg).toMatchObject({
      SINK: "fs",
      PRODUCER_GROUP: "file-producers",
      OUTPUT_DIR: "/out",
      ORGANIZE_BY: "date",
      FILENAME_TEMPLATE: "{{.Name}}-{{.ShortID}}{{.Ext}}",
      ON_CONFLICT: "rename",
      CHUNK_SIZE: 65536,
      FSYNC_EVERY_CHUNKS: 10,
      FILE_MODE: 0o640,
      DISK_SPACE_FACTOR: 2,
      // Not DESIGN §4's 4: see docs/benchmarks.md (issue 10).
      CONCURRENCY: 32,
      LARGE_FILE_CONCURRENCY: 4,
      MAX_DELIVER: 5,
      RETRY_BACKOFF_MS: 1000,
      ACK_WAIT_MS: 30000,
      HTTP_PORT: 9465,
      S3_PART_SIZE: 8 * 1024 * 1024,
      S3_QUEUE_SIZE: 4,
      S3_CHECKSUM: "none",
      S3_CHECKSUM_MODE: "when_supported",
      S3_FORCE_PATH_STYLE: false,
    });
    expect(cfg.MAX_FILE_SIZE).toBeUndefined();
    expect(cfg.ALLOWED_CONTENT_TYPES).toBeUndefined();
    expect(Object.isFrozen(cfg)).toBe(true);
  });

  it("parses values and derives S3_CHECKSUM_MODE from S3_ENDPOINT", async () => {
    const cfg = await load({
      SINK: "S3",
      S3_BUCKET: "b",
      S3_ENDPOINT: "http://127.0.0.1:9000",
      ALLOWED_CONTENT_TYPES: "text/csv, image/*",
      MAX_FILE_SIZE: "10MiB",
      DISK_SPACE_FACTOR: "1.5",
      FILE_MODE: "0600",
      ON_CONFLICT: "skip",
    });
    expect(cfg.SINK).toBe("s3");
    expect(cfg.S3_CHECKSUM_MODE).toBe("when_required");
    expect(cfg.ALLOWED_CONTENT_TYPES).toEqual(["text/csv", "image/*"]);
    expect(cfg.MAX_FILE_SIZE).toBe(10 * 1024 * 1024);
    expect(cfg.DISK_SPACE_FACTOR).toBe(1.5);
    expect(cfg.FILE_MODE).toBe(0o600);
    expect(cfg.OUTPUT_DIR).toBeUndefined();
  });

  it("reports conditional requirements together with field errors", async () => {
    const problems = await problemsOf({ SINK: "s3", CHUNK_SIZE: "huge", ORGANIZE_BY: "weekday" });
    expect(problems).toHaveLength(3);
    expect(problems).toContain("S3_BUCKET: required when SINK=s3");
    expect(problems.find((p) => p.startsWith("CHUNK_SIZE:"))).toMatch(/64KiB/);
    expect(problems.find((p) => p.startsWith("ORGANIZE_BY:"))).toMatch(/date \| type \| source \| none/);
    expect(await problemsOf({})).toEqual(["OUTPUT_DIR: required when SINK=fs"]);
  });

  it("rejects an unknown template placeholder at start-up", async () => {
    const problems = await problemsOf({ OUTPUT_DIR: "/out", FILENAME_TEMPLATE: "{{.Name}}-{{.Colour}}{{.Ext}}" });
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^FILENAME_TEMPLATE: unknown placeholder \{\{\.Colour\}\}/);
  });

  it("describes every variable (the README reference table is generated from it)", () => {
    const schema = producerEnvSchema.shape;
    const undocumented = Object.entries(schema).filter(([, field]) => {
      const json = JSON.stringify(field.toJSONSchema({ io: "input", unrepresentable: "any" }));
      return !json.includes('"description"');
    });
    expect(undocumented.map(([name]) => name)).toEqual([]);
    for (const name of ["SINK", "OUTPUT_DIR", "S3_CHECKSUM_MODE", "ACK_WAIT_MS", "ERROR_DIR", "S3_QUEUE_SIZE"]) {
      expect(Object.keys(schema)).toContain(name);
    }
  });
});

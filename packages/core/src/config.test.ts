import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import {
  commonEnvShape,
  envBytes,
  envDuration,
  envInt,
  envString,
  loadConfig,
  natsUrlProblem,
  parseBytes,
  parseDuration,
  redactConfig,
} from "./config.js";
import { ConfigError } from "./errors.js";

const schema = z.object({
  ...commonEnvShape({ httpPort: 9464 }),
  INPUT_DIR: envString("Directory to watch"),
  POLL_INTERVAL_MS: envInt("Poll interval").default(5000),
  MAX_FILE_SIZE: envBytes("Largest file").optional(),
});

describe("loadConfig", () => {
  it("applies defaults and returns a frozen typed object", async () => {
    const cfg = await loadConfig(schema, { INPUT_DIR: "/in" });
    expect(cfg.NATS_URL).toEqual(["nats://127.0.0.1:4222"]);
    expect(cfg.STREAM).toBe("FILES");
    expect(cfg.SUBJECT).toBe("files.input");
    expect(cfg.POLL_INTERVAL_MS).toBe(5000);
    expect(cfg.HTTP_PORT).toBe(9464);
    expect(cfg.LOG_PRETTY).toBe(false);
    expect(Object.isFrozen(cfg)).toBe(true);
    expect(Object.isFrozen(cfg.NATS_URL)).toBe(true);
  });

  it("reports every problem at once, naming each variable", async () => {
    const err = await loadConfig(schema, { POLL_INTERVAL_MS: "soon", LOG_LEVEL: "loud", MAX_FILE_SIZE: "big" }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConfigError);
    const problems = (err as ConfigError).problems;
    expect(problems).toHaveLength(4);
    expect(problems).toContain("INPUT_DIR: required");
    expect(problems.find((p) => p.startsWith("POLL_INTERVAL_MS:"))).toMatch(/whole number.*"soon"/);
    expect(problems.find((p) => p.startsWith("LOG_LEVEL:"))).toMatch(/one of trace/);
    expect(problems.find((p) => p.startsWith("MAX_FILE_SIZE:"))).toMatch(/64KiB/);
    expect((err as ConfigError).code).toBe("CONFIG_INVALID");
  });

  it("treats empty variables as unset and parses lists and sizes", async () => {
    const cfg = await loadConfig(schema, {
      INPUT_DIR: "/in",
      NATS_URL: "nats://a:4222, nats://b:4222",
      POLL_INTERVAL_MS: "",
      MAX_FILE_SIZE: "10GiB",
    });
    expect(cfg.NATS_URL).toEqual(["nats://a:4222", "nats://b:4222"]);
    expect(cfg.POLL_INTERVAL_MS).toBe(5000);
    expect(cfg.MAX_FILE_SIZE).toBe(10 * 1024 ** 3);
  });

  it("reads a .env file under the real environment", async () => {
    const dir = await mkdtemp(join(tmpdir(), "cfg-"));
    const file = join(dir, ".env");
    await writeFile(file, "INPUT_DIR=/from-file\nSTREAM=FROMFILE\n");
    const cfg = await loadConfig(schema, { STREAM: "FROMENV" }, { envFile: file });
    expect(cfg.INPUT_DIR).toBe("/from-file");
    expect(cfg.STREAM).toBe("FROMENV");
  });

  it("runs extra checks and reports them as configuration problems", async () => {
    const err = await loadConfig(
      schema,
      { INPUT_DIR: "/nope" },
      { check: () => ["INPUT_DIR: /nope is not readable"] },
    ).catch((e: unknown) => e);
    expect((err as ConfigError).problems).toEqual(["INPUT_DIR: /nope is not readable"]);
  });

  it("redacts secrets and URL credentials", () => {
    const out = redactConfig({ NATS_TOKEN: "s3cret", NATS_URL: ["nats://u:p@h:4222"], STREAM: "FILES" });
    expect(JSON.stringify(out)).not.toContain("s3cret");
    expect(JSON.stringify(out)).not.toContain("u:p");
    expect(out.STREAM).toBe("FILES");
    // Permission bits are shown as written, not as a decimal number.
    expect(redactConfig({ FILE_MODE: 0o640, S3_CHECKSUM_MODE: "when_supported" })).toEqual({
      FILE_MODE: "0640",
      S3_CHECKSUM_MODE: "when_supported",
    });
  });
});

describe("parseBytes", () => {
  it.each([
    ["1048576", 1048576],
    ["64KiB", 65536],
    ["1 MB", 1_000_000],
    ["2gib", 2 * 1024 ** 3],
    ["1.5KiB", 1536],
  ])("%s → %d", (raw, n) => expect(parseBytes(raw)).toBe(n));
  it.each(["", "abc", "-1", "12 parsecs"])("rejects %j", (raw) => expect(parseBytes(raw)).toBeUndefined());
});

describe("parseDuration", () => {
  it.each([
    ["60000", 60_000],
    ["250ms", 250],
    ["90s", 90_000],
    ["15m", 900_000],
    ["12h", 43_200_000],
    ["30d", 2_592_000_000],
    ["2w", 1_209_600_000],
    ["1.5h", 5_400_000],
    [" 7 D ", 604_800_000],
  ])("%s → %d", (raw, n) => expect(parseDuration(raw)).toBe(n));
  it.each(["", "abc", "-1d", "3 fortnights", "1h30m", "1e3"])("rejects %j", (raw) =>
    expect(parseDuration(raw)).toBeUndefined(),
  );
});

describe("envDuration and the DLQ limits", () => {
  it("reads DLQ_MAX_AGE as a duration (default 30 days) and DLQ_MAX_BYTES as bytes (unset = no limit)", async () => {
    const defaults = await loadConfig(schema, { INPUT_DIR: "/in" });
    expect(defaults.DLQ_MAX_AGE).toBe(30 * 86_400_000);
    expect(defaults.DLQ_MAX_BYTES).toBeUndefined();
    const set = await loadConfig(schema, { INPUT_DIR: "/in", DLQ_MAX_AGE: "12h", DLQ_MAX_BYTES: "10GiB" });
    expect(set.DLQ_MAX_AGE).toBe(43_200_000);
    expect(set.DLQ_MAX_BYTES).toBe(10 * 1024 ** 3);
  });

  it("names the expected forms and the bounds", async () => {
    const err = await loadConfig(schema, { INPUT_DIR: "/in", DLQ_MAX_AGE: "soon", DLQ_MAX_BYTES: "1" }).catch(
      (e: unknown) => e,
    );
    const problems = (err as ConfigError).problems;
    expect(problems.find((p) => p.startsWith("DLQ_MAX_AGE:"))).toMatch(/duration such as 30d.*"soon"/);
    expect(problems.find((p) => p.startsWith("DLQ_MAX_BYTES:"))).toMatch(/from 1024/);
    const tiny = z.object({ T: envDuration("t", { min: 1000, max: 5000 }) });
    await expect(loadConfig(tiny, { T: "500ms" })).rejects.toThrow(/from 1000 to 5000 ms, got 500/);
    await expect(loadConfig(tiny, { T: "2s" })).resolves.toEqual({ T: 2000 });
  });
});

describe("NATS_URL", () => {
  it("accepts nats:// and tls:// URLs, credentials, IPv6 and bare host[:port] entries", async () => {
    for (const ok of [
      "nats://127.0.0.1:4222",
      "tls://nats.example.com:4443",
      "NATS://u:p@host",
      "nats://[::1]:4222",
      "localhost:4222",
      "nats-0.nats.svc.cluster.local",
      "nats://host:4222/",
    ]) {
      expect(natsUrlProblem(ok), ok).toBeUndefined();
    }
    const cfg = await loadConfig(schema, { INPUT_DIR: "/in", NATS_URL: "nats://a:4222,tls://b:4443" });
    expect(cfg.NATS_URL).toEqual(["nats://a:4222", "tls://b:4443"]);
  });

  it("refuses a bad scheme, host or port in any entry, naming NATS_URL once per problem", async () => {
    expect(natsUrlProblem("not a url")).toMatch(/expected a URL such as nats:\/\/host:4222, got "not a url"/);
    expect(natsUrlProblem("nats://127.0.0.1:notaport")).toMatch(/port from 1 to 65535, got "notaport"/);
    expect(natsUrlProblem("nats://127.0.0.1:70000")).toMatch(/port from 1 to 65535, got "70000"/);
    expect(natsUrlProblem("http://h:4222")).toMatch(/scheme nats:\/\/ or tls:\/\/, got "http"/);
    expect(natsUrlProblem("ws://h:8080")).toMatch(/WebSocket is not supported/);
    expect(natsUrlProblem("nats://u:secret@h:x")).not.toContain("secret");
    expect(natsUrlProblem("nats://h:4222/path")).toBeDefined();
    const err = await loadConfig(schema, {
      INPUT_DIR: "/in",
      NATS_URL: "nats://ok:4222, nats://bad:port, ftp://x",
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    const problems = (err as ConfigError).problems;
    expect(problems).toHaveLength(2);
    expect(problems.every((p) => p.startsWith("NATS_URL: "))).toBe(true);
    expect(await loadConfig(schema, { INPUT_DIR: "/in", NATS_URL: " , " }).catch((e: unknown) => e)).toBeInstanceOf(
      ConfigError,
    );
  });
});

describe("envBool", () => {
  it("names every accepted spelling when refusing a value", async () => {
    const err = await loadConfig(schema, { INPUT_DIR: "/in", LOG_PRETTY: "maybe" }).catch((e: unknown) => e);
    expect((err as ConfigError).problems).toEqual([
      'LOG_PRETTY: expected true or false (also 1/0, yes/no, on/off), got "maybe"',
    ]);
  });
});

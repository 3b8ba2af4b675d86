import { describe, expect, it } from "vitest";
import { archiveKind, gunzippedName } from "./archiveKind.js";
import { copySql, readerSql } from "./convert.js";
import { checkEntryPath, DERIVATIONS, derivedId, entrySubject, parquetSubject } from "./derive.js";
import { globMatcher } from "./glob.js";
import { entryRatioExceeded, limitExceeded, RATIO_FLOOR_BYTES } from "./limits.js";
import { loadTransformerConfig } from "./config.js";

describe("entry path safety", () => {
  it.each([
    ["reports/q1.csv", "reports/q1.csv"],
    ["./a/./b.txt", "a/b.txt"],
    ["a//b", "a/b"],
    ["win\\dir\\f.txt", "win/dir/f.txt"],
  ])("keeps %s as %s", (raw, path) => {
    expect(checkEntryPath(raw)).toEqual({ ok: true, path, directory: false });
  });
  it.each([
    "../x",
    "a/../../x",
    "a/..",
    "/etc/passwd",
    "C:\\x",
    "c:/x",
    "\\\\server\\share\\x",
    "..\\x",
    "",
    "a\u0000b",
    "a\nb",
  ])("refuses %j", (raw) => {
    expect(checkEntryPath(raw).ok).toBe(false);
  });
  it("marks directories", () => {
    expect(checkEntryPath("dir/")).toEqual({ ok: true, path: "dir", directory: true });
    expect(checkEntryPath("./")).toEqual({ ok: true, path: "", directory: true });
  });
});

describe("derived ids and subjects", () => {
  const parent = "2f1c0de5-0000-5000-8000-000000000001";
  it("are deterministic per parent and derivation, distinct otherwise", () => {
    const a = derivedId(parent, DERIVATIONS.entry("reports/q1.csv"));
    expect(derivedId(parent, DERIVATIONS.entry("reports/q1.csv"))).toBe(a);
    expect(a).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(derivedId(parent, DERIVATIONS.entry("reports/q2.csv"))).not.toBe(a);
    expect(derivedId(parent, DERIVATIONS.passThrough)).not.toBe(derivedId(parent, DERIVATIONS.parquet));
    expect(derivedId("another", DERIVATIONS.entry("reports/q1.csv"))).not.toBe(a);
  });
  it("keep an entry under its archive's path; Parquet replaces the extension", () => {
    expect(entrySubject("in/bundle.tar.gz", "reports/q1.csv")).toBe("in/bundle.tar.gz/reports/q1.csv");
    expect(parquetSubject("in/bundle.tar.gz/reports/q1.csv")).toBe("in/bundle.tar.gz/reports/q1.parquet");
    expect(parquetSubject("noext")).toBe("noext.parquet");
    expect(parquetSubject("a/.hidden")).toBe("a/.hidden.parquet");
  });
});

describe("extraction limits", () => {
  const limits = { maxBytes: 1000 * RATIO_FLOOR_BYTES, maxFiles: 10, maxRatio: 100 };
  it("allows what is within every limit", () => {
    expect(limitExceeded({ bytes: 50 * RATIO_FLOOR_BYTES, files: 10, archiveBytes: RATIO_FLOOR_BYTES }, limits)).toBe(
      undefined,
    );
  });
  it("refuses too many entries, too many bytes, too high a ratio past the floor", () => {
    expect(limitExceeded({ bytes: 0, files: 11, archiveBytes: 1 }, limits)).toMatch(/EXTRACT_MAX_FILES/);
    expect(limitExceeded({ bytes: 1001 * RATIO_FLOOR_BYTES, files: 1, archiveBytes: 1e12 }, limits)).toMatch(
      /EXTRACT_MAX_BYTES/,
    );
    expect(limitExceeded({ bytes: RATIO_FLOOR_BYTES + 1, files: 1, archiveBytes: 1000 }, limits)).toMatch(
      /EXTRACT_MAX_RATIO/,
    );
    // Below the floor, a high ratio is fine (small files of zeros).
    expect(limitExceeded({ bytes: RATIO_FLOOR_BYTES, files: 1, archiveBytes: 10 }, limits)).toBe(undefined);
  });
  it("judges a zip entry's declared ratio", () => {
    expect(entryRatioExceeded(64 * RATIO_FLOOR_BYTES, 65_000, 200)).toBe(true);
    expect(entryRatioExceeded(64 * RATIO_FLOOR_BYTES, 10 * RATIO_FLOOR_BYTES, 200)).toBe(false);
    expect(entryRatioExceeded(RATIO_FLOOR_BYTES, 1, 200)).toBe(false);
  });
});

describe("archive kinds, patterns, SQL", () => {
  it("tells the archive kind from the name", () => {
    expect(["a.zip", "a.TAR", "a.tar.gz", "a.tgz", "a.csv.gz", "a.csv"].map(archiveKind)).toEqual([
      "zip",
      "tar",
      "tar.gz",
      "tar.gz",
      "gz",
      undefined,
    ]);
    expect(gunzippedName("data.csv.gz")).toBe("data.csv");
    expect(gunzippedName(".gz")).toBe("data");
  });
  it("matches CONVERT_PATTERNS against base names, case-insensitively", () => {
    const m = globMatcher(["*.csv", "data-?.json"]);
    expect(["A.CSV", "x.csv", "data-1.json"].every(m)).toBe(true);
    expect(["x.csv.gz", "data-10.json", "csv"].some(m)).toBe(false);
  });
  it("reads by extension and quotes paths", () => {
    expect(readerSql("a.tsv", "/t/it's.tsv")).toBe("read_csv('/t/it''s.tsv', delim = '\\t', header = true)");
    expect(readerSql("a.jsonl", "/t/x")).toContain("newline_delimited");
    expect(copySql("read_csv('/x')", "/o.parquet", "none")).toContain("COMPRESSION uncompressed");
  });
});

describe("configuration", () => {
  it("has the documented defaults", async () => {
    const c = await loadTransformerConfig({}, { envFile: null });
    expect(c).toMatchObject({
      TRANSFORM_GROUP: "transformers",
      SUBJECT: "files.input",
      OUTPUT_SUBJECT: "files.processed",
      SINK_GROUPS: ["file-producers"],
      TRANSFORMS: ["unpack", "convert"],
      KEEP_ORIGINAL: true,
      PARQUET_COMPRESSION: "zstd",
      EXTRACT_MAX_FILES: 100_000,
      HTTP_PORT: 9466,
    });
  });
  it("names every bad variable at once", async () => {
    await expect(
      loadTransformerConfig(
        {
          TRANSFORMS: "unpack,explode",
          OUTPUT_SUBJECT: "files.input",
          PARQUET_COMPRESSION: "lz4",
          SINK_GROUPS: "transformers",
        },
        { envFile: null },
      ),
    ).rejects.toThrow(/TRANSFORMS[\s\S]*explode[\s\S]*PARQUET_COMPRESSION|OUTPUT_SUBJECT/);
    const err = await loadTransformerConfig(
      {
        TRANSFORMS: "unpack,explode",
        OUTPUT_SUBJECT: "files.input",
        PARQUET_COMPRESSION: "lz4",
        SINK_GROUPS: "transformers",
      },
      { envFile: null },
    ).then(
      () => ({ problems: [] as string[] }),
      (e: unknown) => e as { problems: string[] },
    );
    const names = err.problems.map((p: string) => p.split(":")[0]);
    expect(names).toEqual(
      expect.arrayContaining(["TRANSFORMS", "OUTPUT_SUBJECT", "PARQUET_COMPRESSION", "SINK_GROUPS"]),
    );
  });
});

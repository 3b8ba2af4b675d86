import { describe, expect, it } from "vitest";
import { batchExtension, batchFileName, NameOrdinals, safeKey, subjectKey, utcStamp } from "./naming.js";

describe("batch file names", () => {
  const at = new Date("2025-07-29T16:15:00.987Z");

  it("are the UTC close time, then the key, then _raw, then the extension", () => {
    expect(utcStamp(at)).toBe("20250729_161500");
    expect(batchFileName({ closedAt: at, raw: false, ext: "json", ordinal: 0 })).toBe("20250729_161500.json");
    expect(batchFileName({ closedAt: at, key: "acm", raw: true, ext: "xml", ordinal: 0 })).toBe(
      "20250729_161500_acm_raw.xml",
    );
    expect(batchFileName({ closedAt: at, key: "acm", raw: false, ext: "xml", ordinal: 2 })).toBe(
      "20250729_161500_acm_003.xml",
    );
    expect(batchFileName({ closedAt: at, key: "acm", raw: true, ext: "xml", ordinal: 1 })).toBe(
      "20250729_161500_acm_raw_002.xml",
    );
  });

  it("sort in closing order within one second, after the batches of the second before", () => {
    const earlier = new Date(at.getTime() - 1000);
    for (const [key, raw] of [
      [undefined, false],
      ["acm", false],
      ["acm", true],
    ] as const) {
      const o = new NameOrdinals();
      const closings = [earlier, at, at, at, ...Array.from({ length: 12 }, () => at)];
      const names = closings.map((closedAt) =>
        batchFileName({ closedAt, key, raw, ext: "xml", ordinal: o.next(closedAt, key) }),
      );
      expect(new Set(names).size).toBe(names.length);
      expect([...names].sort()).toEqual(names);
    }
    expect(["20250729_161500_acm_002.xml", "20250729_161500_acm.xml"].sort()).toEqual([
      "20250729_161500_acm.xml",
      "20250729_161500_acm_002.xml",
    ]);
  });

  it("stay unique when several batches of one key close in the same second", () => {
    const o = new NameOrdinals();
    expect([o.next(at, "a"), o.next(at, "a"), o.next(at, "b"), o.next(at, "a")]).toEqual([0, 1, 0, 2]);
    expect(o.next(new Date(at.getTime() + 1000), "a")).toBe(0);
  });

  it("make keys safe for file names", () => {
    expect(safeKey("tenant-1_x")).toBe("tenant-1_x");
    expect(safeKey("a/b\\c..d")).toBe("a_b_c__d");
    expect(safeKey("")).toBe("_");
  });

  it("take the BATCH_KEY token of the subject (1-based)", () => {
    expect(subjectKey("events.acm.login", 2)).toBe("acm");
    expect(subjectKey("events", 2)).toBe("_");
    expect(subjectKey("events.acm", undefined)).toBeUndefined();
  });

  it("use the format's extension; a raw XML fallback stays .xml even when converting", () => {
    expect(batchExtension("xml", "none", false)).toBe("xml");
    expect(batchExtension("xml", "json", false)).toBe("json");
    expect(batchExtension("xml", "json", true)).toBe("xml");
    expect(batchExtension("jsonl", "none", true)).toBe("jsonl");
    expect(batchExtension("raw", "none", false)).toBe("txt");
  });
});

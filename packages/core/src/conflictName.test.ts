import { describe, expect, it } from "vitest";
import { truncateUtf8, withNumericSuffix } from "./conflictName.js";

describe("withNumericSuffix", () => {
  it("puts the suffix before the extension and leaves names that fit as they are", () => {
    expect(withNumericSuffix("2024/01/02/report.csv", 1)).toBe("2024/01/02/report-1.csv");
    expect(withNumericSuffix("/a/report.csv", 1)).toBe("/a/report-1.csv");
    expect(withNumericSuffix("a/b/report.csv", 2)).toBe("a/b/report-2.csv");
    expect(withNumericSuffix("archive.tar.gz", 2)).toBe("archive.tar-2.gz");
    expect(withNumericSuffix("/a/README", 3)).toBe("/a/README-3");
    expect(withNumericSuffix("noext", 1)).toBe("noext-1");
  });

  it("treats dotfile-like names as having no extension", () => {
    expect(withNumericSuffix("/a/.env", 1)).toBe("/a/.env-1");
    expect(withNumericSuffix(".env", 2)).toBe(".env-2");
    expect(withNumericSuffix("a/.config.json", 1)).toBe("a/.config-1.json");
  });

  it("shortens the stem on a character boundary so the name stays within 255 bytes", () => {
    const long = withNumericSuffix(`d/${"é".repeat(127)}.csv`, 12);
    expect(long.startsWith("d/")).toBe(true);
    expect(long.endsWith("-12.csv")).toBe(true);
    expect(Buffer.byteLength(long.slice(2))).toBeLessThanOrEqual(255);
    expect(long.slice(2, -7)).toBe("é".repeat(124));
    const ascii = withNumericSuffix(`/x/${"a".repeat(255)}`, 7);
    expect(ascii).toBe(`/x/${"a".repeat(253)}-7`);
    // Only the last component is limited.
    expect(withNumericSuffix(`${"d".repeat(300)}/f.txt`, 1)).toBe(`${"d".repeat(300)}/f-1.txt`);
  });

  it("gives up the extension when it alone would not fit", () => {
    const name = `a.${"x".repeat(254)}`;
    const out = withNumericSuffix(name, 3, 255);
    expect(Buffer.byteLength(out)).toBe(255);
    expect(out.endsWith("-3")).toBe(true);
  });

  it("honours a smaller limit", () => {
    expect(withNumericSuffix("abcdef.txt", 1, 8)).toBe("ab-1.txt");
  });
});

describe("truncateUtf8", () => {
  it("cuts between code points", () => {
    expect(truncateUtf8("ééé", 5)).toBe("éé");
    expect(truncateUtf8("a😀b", 4)).toBe("a");
    expect(truncateUtf8("abc", 10)).toBe("abc");
    expect(truncateUtf8("abc", -1)).toBe("");
  });
});

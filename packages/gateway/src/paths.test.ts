import { describe, expect, it } from "vitest";
import { HttpError } from "./httpError.js";
import { contentTypeAllowed, sanitizeFilename, uploadSubject } from "./paths.js";

const code = (fn: () => unknown) => {
  try {
    fn();
    return "accepted";
  } catch (err) {
    return err instanceof HttpError ? `${err.status} ${err.code}` : String(err);
  }
};

describe("upload names and paths", () => {
  it("keeps only the base name of a client file name", () => {
    expect(sanitizeFilename("a.csv")).toBe("a.csv");
    expect(sanitizeFilename("C:\\Users\\me\\report.xlsx")).toBe("report.xlsx");
    expect(sanitizeFilename("/etc/passwd")).toBe("passwd");
    expect(code(() => sanitizeFilename(".."))).toBe("400 NAME_INVALID");
    expect(code(() => sanitizeFilename(""))).toBe("400 NAME_INVALID");
    expect(code(() => sanitizeFilename("dir/"))).toBe("400 NAME_INVALID");
    expect(code(() => sanitizeFilename("a\u0000b"))).toBe("400 NAME_INVALID");
    expect(code(() => sanitizeFilename(`${"x".repeat(256)}.csv`))).toBe("400 NAME_INVALID");
  });

  it("makes `path` relative and '/'-separated like the consumer's paths", () => {
    expect(uploadSubject("a.csv", undefined)).toBe("a.csv");
    expect(uploadSubject("a.csv", "")).toBe("a.csv");
    expect(uploadSubject("a.csv", "reports/2026")).toBe("reports/2026/a.csv");
    expect(uploadSubject("a.csv", "/reports//2026/./")).toBe("reports/2026/a.csv");
    expect(uploadSubject("a.csv", "reports\\2026")).toBe("reports/2026/a.csv");
    expect(uploadSubject("a.csv", "C:\\data\\in")).toBe("data/in/a.csv");
    // A path that already ends in the file's name names the file itself.
    expect(uploadSubject("a.csv", "reports/a.csv")).toBe("reports/a.csv");
  });

  it("refuses '..' instead of resolving it", () => {
    expect(code(() => uploadSubject("a.csv", "../etc"))).toBe("400 PATH_UNSAFE");
    expect(code(() => uploadSubject("a.csv", "x/../../y"))).toBe("400 PATH_UNSAFE");
    expect(code(() => uploadSubject("a.csv", "x\\..\\y"))).toBe("400 PATH_UNSAFE");
    expect(code(() => uploadSubject("a.csv", "x/\u0007/y"))).toBe("400 NAME_INVALID");
  });

  it("matches content types like the producer's ALLOWED_CONTENT_TYPES", () => {
    expect(contentTypeAllowed("text/csv", undefined)).toBe(true);
    expect(contentTypeAllowed("text/csv; charset=utf-8", ["text/csv"])).toBe(true);
    expect(contentTypeAllowed("text/html", ["text/*"])).toBe(true);
    expect(contentTypeAllowed("image/png", ["text/*", "application/pdf"])).toBe(false);
    expect(contentTypeAllowed("image/png", ["*/*"])).toBe(true);
  });
});

import { describe, expect, it } from "vitest";
import { formatBytes, renderTable } from "./renderTable.js";

describe("renderTable", () => {
  it("wraps a column given a width instead of widening every row, keeping every character", () => {
    const reason =
      "failed 5 times; last error [WRITE_FAILED]: writing /data/output/2026/12/02/report-6a1c9d2e.csv failed";
    const text = renderTable(["seq", "error"], [[1, reason]], [null, 30]);
    const lines = text.split("\n");
    expect(new Set(lines.map((l) => l.length)).size).toBe(1);
    expect(lines[0]!.length).toBeLessThanOrEqual(5 + 30 + 3);
    const cells = lines
      .slice(3, -1)
      .map((l) => l.split("│")[2]!.trim())
      .join("");
    expect(cells.replace(/\s/g, "")).toBe(reason.replace(/\s/g, ""));
  });

  it("formats sizes in binary units", () => {
    expect([formatBytes(0), formatBytes(1536), formatBytes(3 * 1024 ** 3)]).toEqual(["0 B", "1.5 KiB", "3.0 GiB"]);
  });
});

import { describe, expect, it } from "vitest";
import type { ConflictMode } from "../config.js";
import { conflictCandidate, conflictError, decideConflict, type TargetState } from "./conflictPolicy.js";

describe("ON_CONFLICT policy", () => {
  const modes: ConflictMode[] = ["rename", "overwrite", "skip", "fail"];
  // Rows: what is at the name; columns: rename, overwrite, skip, fail.
  const table: Record<TargetState, string[]> = {
    absent: ["write", "write", "write", "write"],
    same: ["skip-identical", "skip-identical", "skip-identical", "skip-identical"],
    "ours-broken": ["overwrite", "overwrite", "overwrite", "overwrite"],
    other: ["rename-with-suffix", "overwrite", "skip", "fail"],
  };

  for (const [state, actions] of Object.entries(table) as [TargetState, string[]][]) {
    modes.forEach((mode, i) => {
      it(`${mode} with ${state} at the name: ${actions[i]}`, () => {
        expect(decideConflict(mode, state).action).toBe(actions[i]);
      });
    });
  }

  it("fails with CONFLICT, a permanent code", () => {
    const d = decideConflict("fail", "other");
    expect(d).toEqual({ action: "fail", code: "CONFLICT" });
    const err = conflictError("CONFLICT", "/out/a.txt", { location: "/out/a.txt" });
    expect(err.code).toBe("CONFLICT");
    expect(err.permanent).toBe(true);
    expect(err.message).toBe("/out/a.txt exists with different content and ON_CONFLICT=fail");
  });

  it("walks the name itself, then its suffixed names", () => {
    expect([0, 1, 2].map((n) => conflictCandidate("2024/01/02/report.csv", n))).toEqual([
      "2024/01/02/report.csv",
      "2024/01/02/report-1.csv",
      "2024/01/02/report-2.csv",
    ]);
  });
});

import { mkdir, mkdtemp, readdir, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { silentLogger } from "./logger.js";
import { dayFolderStart, expiredDayFolders, startRetentionPruner, utcDay } from "./retention.js";

describe("utcDay", () => {
  it("names the UTC day, whatever the local time zone", () => {
    expect(utcDay(new Date("2026-01-02T23:59:59.999Z"))).toBe("2026-01-02");
    expect(utcDay(new Date("2026-01-03T00:00:00.000Z"))).toBe("2026-01-03");
    expect(dayFolderStart(utcDay(new Date("2024-02-29T12:00:00Z")))).toBe(Date.UTC(2024, 1, 29));
  });
});

describe("dayFolderStart", () => {
  it("accepts real YYYY-MM-DD dates only", () => {
    expect(dayFolderStart("2024-02-29")).toBe(Date.UTC(2024, 1, 29));
    for (const name of ["2023-02-29", "2024-02-31", "2024-13-01", "2024-1-01", "2024-01-01x", "x2024-01-01", "today"]) {
      expect(dayFolderStart(name), name).toBeUndefined();
    }
  });
});

describe("expiredDayFolders", () => {
  const names = ["2025-03-07", "2025-03-08", "2025-03-09", "2025-03-10", "2025-03-11", "notes", "2025-02-30"];
  it("keeps today and the N days before it (UTC), whatever the time of day", () => {
    for (const time of ["2025-03-10T00:00:00.000Z", "2025-03-10T12:00:00.000Z", "2025-03-10T23:59:59.999Z"]) {
      const now = new Date(time);
      expect(expiredDayFolders(names, 1, now), time).toEqual(["2025-03-07", "2025-03-08"]);
      expect(expiredDayFolders(names, 2, now), time).toEqual(["2025-03-07"]);
      expect(expiredDayFolders(names, 3, now), time).toEqual([]);
      expect(expiredDayFolders(names, 0, now), time).toEqual(["2025-03-07", "2025-03-08", "2025-03-09"]);
    }
  });

  it("never returns future days or names that are not dates", () => {
    const now = new Date("2025-03-10T08:00:00.000Z");
    const expired = expiredDayFolders(names, 0, now);
    expect(expired).not.toContain("2025-03-11");
    expect(expired).not.toContain("notes");
    expect(expired).not.toContain("2025-02-30");
  });
});

describe("startRetentionPruner", () => {
  let root: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), "retention-"));
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("removes expired day folders recursively, never a symlink's target, a file or another name", async () => {
    const archive = join(root, "archive");
    const outside = join(root, "outside");
    await mkdir(join(archive, "2025-01-01", "deep", "er"), { recursive: true });
    await writeFile(join(archive, "2025-01-01", "deep", "er", "a.txt"), "old");
    await mkdir(join(archive, "2025-03-10"));
    await mkdir(join(archive, "keep-me"));
    await mkdir(join(archive, "2025-02-30"));
    await writeFile(join(archive, "2025-01-02"), "a file named like a day");
    await mkdir(outside);
    await writeFile(join(outside, "precious.txt"), "keep");
    await symlink(outside, join(archive, "2025-01-03"));
    // Inside an expired folder, a link out: removed as a link, its target untouched.
    await symlink(outside, join(archive, "2025-01-01", "link-out"));

    await using pruner = startRetentionPruner({
      roots: [
        { dir: archive, days: 7, label: "ARCHIVE_DIR" },
        { dir: join(root, "missing"), days: 1, label: "ERROR_DIR" },
      ],
      log: silentLogger(),
      now: () => new Date("2025-03-10T10:00:00.000Z"),
    });
    const removed = await pruner.prune();
    expect(removed).toEqual([join(archive, "2025-01-01")]);
    expect((await readdir(archive)).sort()).toEqual([
      "2025-01-02",
      "2025-01-03",
      "2025-02-30",
      "2025-03-10",
      "keep-me",
    ]);
    expect((await stat(join(outside, "precious.txt"))).isFile()).toBe(true);
    // A second pass has nothing left to do.
    expect(await pruner.prune()).toEqual([]);
    await pruner.close();
    expect(await pruner.prune()).toEqual([]);
  });
});

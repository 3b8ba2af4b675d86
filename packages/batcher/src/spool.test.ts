import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { readSpool, SpoolWriter } from "./spool.js";

describe("spool", () => {
  it("reads back every event in order, small and larger than its buffers", async () => {
    const dir = await mkdtemp(join(tmpdir(), "spool-"));
    try {
      const events = [Buffer.from("a"), Buffer.alloc(0), Buffer.alloc(70_000, 7), Buffer.alloc(3_000_000, 9)];
      for (let i = 0; i < 5000; i++) events.push(Buffer.from(`event-${i}`));
      const w = new SpoolWriter(join(dir, "s"));
      for (const e of events) w.append(e);
      w.finish();
      expect(w.events).toBe(events.length);
      const back: Buffer[] = [];
      for await (const e of readSpool(w.path)) back.push(Buffer.from(e));
      expect(back).toEqual(events);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

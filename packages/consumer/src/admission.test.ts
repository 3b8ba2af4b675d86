import { describe, expect, it } from "vitest";
import { DEFAULT_WINDOW, mayAdmit, mayResume, pickReadyQueue, windowLimits, type WindowLimits } from "./admission.js";

const limits: WindowLimits = { window: 100, eventShare: 20, resumeAt: 80 };

describe("mayAdmit", () => {
  it("admits walk-found files until the window is full", () => {
    expect(mayAdmit(0, "walk", limits)).toBe(true);
    expect(mayAdmit(99, "walk", limits)).toBe(true);
    expect(mayAdmit(100, "walk", limits)).toBe(false);
  });

  it("gives files announced by events extra room beyond a full window, and no more", () => {
    expect(mayAdmit(100, "event", limits)).toBe(true);
    expect(mayAdmit(119, "event", limits)).toBe(true);
    expect(mayAdmit(120, "event", limits)).toBe(false);
  });
});

describe("windowLimits", () => {
  it("derives the event share and the resume mark from DISCOVERY_WINDOW", () => {
    expect(DEFAULT_WINDOW).toEqual({ window: 8192, eventShare: 2048, resumeAt: 7168 });
    expect(windowLimits(10)).toEqual({ window: 10, eventShare: 16, resumeAt: 9 });
    expect(windowLimits(1)).toEqual({ window: 1, eventShare: 16, resumeAt: 0 });
  });
});

describe("mayResume", () => {
  it("resumes a paused walk only once the window has drained below the mark", () => {
    expect(mayResume(100, limits)).toBe(false);
    expect(mayResume(81, limits)).toBe(false);
    expect(mayResume(80, limits)).toBe(true);
  });
});

describe("pickReadyQueue", () => {
  it("takes from whichever queue has files when only one has", () => {
    expect(pickReadyQueue(0, 0, 0)).toBeUndefined();
    expect(pickReadyQueue(0, 5, 0)).toBe("backlog");
    expect(pickReadyQueue(5, 0, 10)).toBe("fresh");
  });

  it("prefers fresh files, but lets a backlog file through after a burst", () => {
    expect(pickReadyQueue(5, 1000, 0)).toBe("fresh");
    expect(pickReadyQueue(5, 1000, 2, 3)).toBe("fresh");
    expect(pickReadyQueue(5, 1000, 3, 3)).toBe("backlog");
  });

  it("shares the workers: a long mixed run gives the backlog at least 1 in burst+1 turns", () => {
    let fresh = 1000;
    let backlog = 1000;
    let inARow = 0;
    let backlogTaken = 0;
    for (let i = 0; i < 400; i++) {
      const q = pickReadyQueue(fresh, backlog, inARow, 3);
      if (q === "fresh") {
        fresh--;
        inARow++;
      } else {
        backlog--;
        backlogTaken++;
        inARow = 0;
      }
    }
    expect(backlogTaken).toBe(100);
  });
});

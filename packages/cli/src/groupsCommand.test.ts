import { describe, expect, it } from "vitest";
import { memberActivity, type GroupEntry } from "./groupsCommand.js";

const now = Date.parse("2026-12-02T12:00:00Z");
const group = (over: Partial<GroupEntry>): GroupEntry => ({
  name: "g",
  filter: "files.input",
  pending: 5,
  ackPending: 0,
  redelivered: 0,
  waiting: 0,
  lastDelivery: null,
  deadLetters: 0,
  ...over,
});

describe("groups remove: is anyone still running the group?", () => {
  it("an idle member leaves a pull request waiting", () => {
    expect(memberActivity(group({ waiting: 2 }), now)).toBe("has 2 member pull request(s) waiting");
  });

  it("a busy member has messages in hand and took one recently", () => {
    expect(memberActivity(group({ ackPending: 3, lastDelivery: "2026-12-02T11:59:50Z" }), now)).toBe(
      "received a delivery 10 s ago",
    );
  });

  it("a group nobody runs: no pull waiting, nothing in hand or nothing recent", () => {
    expect(memberActivity(group({}), now)).toBeUndefined();
    expect(memberActivity(group({ ackPending: 3, lastDelivery: "2026-12-02T11:58:00Z" }), now)).toBeUndefined();
    expect(memberActivity(group({ lastDelivery: "2026-12-02T11:59:59Z" }), now)).toBeUndefined();
  });
});

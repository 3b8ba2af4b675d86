import { headers as natsHeaders } from "@nats-io/nats-core";
import { describe, expect, it } from "vitest";
import { errorCopyFits, ERROR_COPY_HEADROOM_BYTES } from "./deadLetter.js";
import {
  cutToBytes,
  DEAD_LETTER_VALUE_MAX_BYTES,
  fitDeadLetter,
  headerBlockBytes,
  JETSTREAM_MAX_HEADER_BYTES,
} from "./deadLetterFit.js";

const envelope: Record<string, string> = {
  "ce-specversion": "1.0",
  "ce-id": "0b6c9c4e-7d0a-4d8e-9a53-3f7f2b7f0c11",
  "ce-source": "api",
  "ce-type": "io.filerelay.file.v1",
  "ce-time": "2025-01-02T03:04:05.000Z",
  "ce-subject": "in/report.csv",
  "content-type": "text/csv",
  "ce-filename": "report.csv",
  "ce-filesize": "12",
  "ce-sha256": "a".repeat(64),
  "ce-mtime": "2025-01-02T03:04:05.000Z",
  "ce-payload": "inline",
  "Nats-Msg-Id": "0b6c9c4e-7d0a-4d8e-9a53-3f7f2b7f0c11",
};
const own: [string, string][] = [
  ["filerelay-error", "invalid envelope"],
  ["filerelay-error-code", "ENVELOPE_INVALID"],
  ["filerelay-deliveries", "1"],
  ["filerelay-group", "file-producers"],
];
const MiB = 1024 * 1024;

/** Encoded size of the header block nats.js would send for the fitted dead letter (with the truncation headers). */
function encoded(fit: ReturnType<typeof fitDeadLetter>): number {
  const h = natsHeaders();
  for (const [k, v] of [...fit.headers, ...own]) h.set(k, v);
  if (fit.truncated.length > 0) {
    h.set("filerelay-truncated", fit.truncated.join(","));
    h.set("filerelay-original-header-bytes", "65535");
    h.set("filerelay-original-body-bytes", String(MiB));
  }
  return (h as unknown as { encode(): Uint8Array }).encode().length;
}

describe("headerBlockBytes", () => {
  it("matches what nats.js encodes", () => {
    const h = natsHeaders();
    const entries: [string, string][] = [...Object.entries(envelope), ["x-u", "ünïcode ✓"]];
    for (const [k, v] of entries) h.set(k, v);
    expect(headerBlockBytes(entries)).toBe((h as unknown as { encode(): Uint8Array }).encode().length);
  });
});

describe("cutToBytes", () => {
  it("leaves short text alone and cuts long text to the byte limit, never inside a character", () => {
    expect(cutToBytes("abc", 3)).toBe("abc");
    expect(cutToBytes("abcdef", 5)).toBe("ab…");
    const cut = cutToBytes("ééééé", 8);
    expect(Buffer.byteLength(cut)).toBeLessThanOrEqual(8);
    expect(cut).toBe("éé…");
    expect(cutToBytes("abcdef", 2)).toBe("");
  });
});

describe("fitDeadLetter", () => {
  it("copies everything but the dedup id, filerelay-* and broker directives when it fits", () => {
    const fit = fitDeadLetter({ ...envelope, "filerelay-error": "old", "x-custom": "kept" }, own, 1000, {
      maxPayload: MiB,
    });
    expect(fit.keepBody).toBe(true);
    expect(fit.truncated).toEqual([]);
    expect(Object.fromEntries(fit.headers)).toEqual({
      ...Object.fromEntries(Object.entries(envelope).filter(([k]) => k !== "Nats-Msg-Id")),
      "x-custom": "kept",
    });
  });

  it("drops Nats-* directives meant for the original stream, and says so", () => {
    const fit = fitDeadLetter({ ...envelope, "Nats-Expected-Stream": "FILES" }, own, 0, { maxPayload: MiB });
    expect(fit.headers.map(([k]) => k)).not.toContain("Nats-Expected-Stream");
    expect(fit.truncated).toEqual(["headers"]);
  });

  it("drops header names the client would refuse (from a leniently decoded block)", () => {
    const fit = fitDeadLetter({ ...envelope, "bad name": "x" }, own, 0, { maxPayload: MiB });
    expect(fit.headers.map(([k]) => k)).not.toContain("bad name");
    expect(fit.truncated).toEqual(["headers"]);
  });

  it("cuts a value over 8 KiB even when everything fits, and cleans control characters", () => {
    const fit = fitDeadLetter({ ...envelope, "ce-source": "A".repeat(20_000), "x-a": "a\nb" }, own, 0, {
      maxPayload: MiB,
    });
    const h = Object.fromEntries(fit.headers);
    expect(Buffer.byteLength(h["ce-source"]!)).toBe(DEAD_LETTER_VALUE_MAX_BYTES);
    expect(h["x-a"]).toBe("a b");
    expect(fit.truncated).toEqual(["headers"]);
  });

  it("headers padded to the 64 KiB limit: surplus headers go, envelope headers and the body stay", () => {
    const padded: Record<string, string> = { ...envelope };
    for (let i = 0; i < 15; i++) padded[`x-pad-${i}`] = "p".repeat(4300);
    padded["x-pad-last"] = "";
    padded["x-pad-last"] = "q".repeat(JETSTREAM_MAX_HEADER_BYTES - headerBlockBytes(Object.entries(padded)));
    expect(headerBlockBytes(Object.entries(padded))).toBe(JETSTREAM_MAX_HEADER_BYTES);
    const fit = fitDeadLetter(padded, own, 12, { maxPayload: MiB });
    expect(fit.keepBody).toBe(true);
    expect(fit.truncated).toEqual(["headers"]);
    expect(encoded(fit)).toBeLessThanOrEqual(JETSTREAM_MAX_HEADER_BYTES);
    const h = Object.fromEntries(fit.headers);
    for (const [k, v] of Object.entries(envelope)) if (k !== "Nats-Msg-Id") expect(h[k], k).toBe(v);
    // Most of the padding is still there: only what does not fit is cut.
    expect(encoded(fit)).toBeGreaterThan(JETSTREAM_MAX_HEADER_BYTES - 1000);
  });

  it("a body near max_payload is given up; the headers stay whole", () => {
    const maxPayload = 128 * 1024;
    const body = maxPayload - headerBlockBytes(Object.entries(envelope)) - 8;
    const fit = fitDeadLetter(envelope, own, body, { maxPayload });
    expect(fit.keepBody).toBe(false);
    expect(fit.truncated).toEqual(["body"]);
    expect(fit.headers).toHaveLength(Object.keys(envelope).length - 1);
  });

  it("a body that fits next to the envelope headers is kept, other headers are cut for it", () => {
    const maxPayload = 128 * 1024;
    const big = { ...envelope, "x-big": "b".repeat(8000) };
    const bodyBytes = maxPayload - headerBlockBytes(Object.entries(envelope)) - 2000;
    const fit = fitDeadLetter(big, own, bodyBytes, { maxPayload });
    expect(fit.keepBody).toBe(true);
    expect(fit.truncated).toEqual(["headers"]);
    expect(encoded(fit) + bodyBytes).toBeLessThanOrEqual(maxPayload);
    expect(Object.fromEntries(fit.headers)["ce-id"]).toBe(envelope["ce-id"]);
  });

  it("oversized envelope headers are cut down (envelope headers first) rather than dropped", () => {
    const huge: Record<string, string> = { ...envelope };
    for (const k of ["ce-source", "ce-subject", "ce-filename", "content-type", "ce-time", "ce-mtime", "ce-type"]) {
      huge[k] = "z".repeat(8000);
    }
    for (let i = 0; i < 4; i++) huge[`x-${i}`] = "y".repeat(2000);
    const fit = fitDeadLetter(huge, own, 0, { maxPayload: 40_000 });
    expect(encoded(fit)).toBeLessThanOrEqual(40_000);
    const h = Object.fromEntries(fit.headers);
    expect(h["ce-id"]).toBe(envelope["ce-id"]);
    expect(h["ce-payload"]).toBe("inline");
    for (const k of ["ce-source", "ce-subject", "ce-filename"]) expect(h[k]?.length, k).toBeGreaterThanOrEqual(1000);
  });
});

describe("errorCopyFits", () => {
  const GiB = 1024 ** 3;
  it("keeps the larger of 64 MiB and 5 % of the filesystem free", () => {
    expect(errorCopyFits(MiB, { free: 10 * GiB, total: 100 * GiB })).toBe(true);
    expect(errorCopyFits(MiB, { free: 5 * GiB + MiB, total: 100 * GiB })).toBe(true);
    expect(errorCopyFits(MiB, { free: 5 * GiB + MiB - 1, total: 100 * GiB })).toBe(false);
    expect(errorCopyFits(MiB, { free: ERROR_COPY_HEADROOM_BYTES + MiB, total: GiB })).toBe(true);
    expect(errorCopyFits(MiB, { free: ERROR_COPY_HEADROOM_BYTES, total: GiB })).toBe(false);
  });
});

import { describe, expect, it } from "vitest";
import { lenientHeaderBlock } from "./headers.js";

describe("lenientHeaderBlock", () => {
  it("splits on CRLF, bare CR and bare LF; the first value of a name wins", () => {
    const block = Buffer.from(
      "NATS/1.0\r\nce-id: abc\r\nce-subject: d\nx.txt\r\nce-source: api\rX-Evil: 1\r\nce-id: other\r\n\r\n",
    );
    expect(lenientHeaderBlock(block)).toEqual({
      "ce-id": "abc",
      "ce-subject": "d",
      "ce-source": "api",
      "X-Evil": "1",
    });
  });
  it("ignores the status line and lines without a name", () => {
    expect(lenientHeaderBlock(Buffer.from("NATS/1.0\r\n: no name\r\nnocolon\r\n\r\n"))).toEqual({});
  });
});

import { describe, expect, it } from "vitest";
import { EventTooLargeError, lineFramer, xmlFramer, type Framer } from "./framing.js";

/** Feeds `input` split at every position in `cuts` and returns the events as strings. */
function frame(framer: Framer, input: string, chunk = 3): string[] {
  const bytes = Buffer.from(input);
  const out: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += chunk) out.push(...framer.push(bytes.subarray(i, i + chunk)));
  out.push(...framer.end());
  return out.map((b) => b.toString());
}

describe("line framing", () => {
  it("splits on newlines across chunks, drops CR and blank lines, keeps an unterminated last line", () => {
    expect(frame(lineFramer(100), "a1\r\nb22\n\n  \nc333", 2)).toEqual(["a1", "b22", "c333"]);
  });
  it("refuses a line over the limit", () => {
    expect(() => frame(lineFramer(4), "12345\n")).toThrow(EventTooLargeError);
  });
});

describe("XML document framing", () => {
  it("ends each document where its root element closes", () => {
    const docs = [
      '<?xml version="1.0"?>\n<e id="1"><a>x</a></e>',
      '<?xml version="1.0"?><e/>',
      "<e a=\"x>y\" b='/>'><!-- </e> --><![CDATA[</e>]]><f/></e>",
      '<!DOCTYPE e [<!ENTITY x "y">]><e>&x;</e>',
    ];
    for (const chunk of [1, 2, 7, 1000]) {
      expect(frame(xmlFramer(1000), `${docs.join("\n")}\n`, chunk)).toEqual(docs);
    }
  });
  it("hands an unfinished document over at the end of the stream", () => {
    expect(frame(xmlFramer(1000), "<e><f/>")).toEqual(["<e><f/>"]);
  });
  it("refuses a document over the limit", () => {
    expect(() => frame(xmlFramer(10), "<e>0123456789</e>")).toThrow(EventTooLargeError);
  });
});

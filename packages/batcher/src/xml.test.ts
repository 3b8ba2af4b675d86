import { describe, expect, it } from "vitest";
import { renderBatch } from "./render.js";
import { stripXmlDeclaration, XmlBatchChecker, XmlToJson } from "./xml.js";

const b = (s: string) => Buffer.from(s);

async function render(events: string[], options: Parameters<typeof renderBatch>[1]): Promise<string> {
  async function* source() {
    for (const e of events) yield await Promise.resolve(b(e));
  }
  const parts: Buffer[] = [];
  for await (const p of renderBatch(source(), options)) parts.push(p);
  return Buffer.concat(parts).toString("utf8");
}

describe("XML declarations", () => {
  it("are stripped with a BOM and surrounding whitespace", () => {
    const s = stripXmlDeclaration(b('\uFEFF \n<?xml version="1.0" encoding="utf-8"?>\n<e a="1"/>'));
    expect(s.body.toString()).toBe('<e a="1"/>');
    expect(s.foreignEncoding).toBe(false);
  });

  it("leave events without one (or with another processing instruction) alone", () => {
    expect(stripXmlDeclaration(b("<e/>")).body.toString()).toBe("<e/>");
    expect(stripXmlDeclaration(b('<?xml-stylesheet href="a"?><e/>')).body.toString()).toBe(
      '<?xml-stylesheet href="a"?><e/>',
    );
  });

  it("flag an encoding other than UTF-8", () => {
    expect(stripXmlDeclaration(b('<?xml version="1.0" encoding="ISO-8859-1"?><e/>')).foreignEncoding).toBe(true);
  });
});

describe("the batch check", () => {
  const check = (events: string[]) => {
    const c = new XmlBatchChecker("EVENTS");
    for (const e of events) c.add(stripXmlDeclaration(b(e)));
    return c.finish();
  };
  it("accepts well-formed events", () => {
    expect(check(['<?xml version="1.0"?><e id="1">x</e>', "<e><![CDATA[<>]]></e>"])).toBeUndefined();
  });
  it("rejects a malformed event, a DOCTYPE inside the root, bad UTF-8 and foreign encodings", () => {
    expect(check(["<e>", "<f/>"])).toBeDefined();
    expect(check(["<e></f>"])).toBeDefined();
    expect(check(["<!DOCTYPE e><e/>"])).toBeDefined();
    const c = new XmlBatchChecker("EVENTS");
    c.add({ body: Buffer.from([0x3c, 0x65, 0xff, 0x2f, 0x3e]), foreignEncoding: false });
    expect(c.finish()).toMatch(/UTF-8/);
    expect(check(['<?xml version="1.0" encoding="latin1"?><e/>'])).toMatch(/encoding/);
  });
});

describe("XML batches", () => {
  it("have one declaration and one root around the stripped events", async () => {
    const out = await render(['<?xml version="1.0"?>\n<e n="1"/>', '<?xml version="1.0"?><e n="2">t</e>'], {
      format: "xml",
      convert: "none",
      root: "EVENTS",
      raw: false,
    });
    expect(out).toBe('<?xml version="1.0" encoding="UTF-8"?>\n<EVENTS>\n<e n="1"/>\n<e n="2">t</e>\n</EVENTS>\n');
  });

  it("as raw: every byte of every event, one per line", async () => {
    const out = await render(["<a>", "<b/>\n"], { format: "xml", convert: "none", root: "EVENTS", raw: true });
    expect(out).toBe("<a>\n<b/>\n");
  });

  it("convert to JSON: one object per event; attributes @, text #text, repeated children as arrays", async () => {
    const out = await render(
      [
        '<?xml version="1.0"?><event id="1" type="login"><user>ann</user><tag>a</tag><tag>b</tag><geo lat="1"> x </geo></event>',
        "<event><![CDATA[raw <text>]]></event>",
      ],
      { format: "xml", convert: "json", root: "EVENTS", raw: false },
    );
    expect(JSON.parse(out)).toEqual([
      {
        "#name": "event",
        "@id": "1",
        "@type": "login",
        user: "ann",
        tag: ["a", "b"],
        geo: { "@lat": "1", "#text": "x" },
      },
      { "#name": "event", "#text": "raw <text>" },
    ]);
  });

  it("convert an empty batch to an empty array", () => {
    const c = new XmlToJson();
    c.write("<EVENTS></EVENTS>");
    c.close();
    expect(c.take()).toEqual([]);
  });
});

describe("JSON Lines batches", () => {
  it("put each event on one line, re-serializing one spread over several", async () => {
    const out = await render(['{"a":1}', '{\n  "b": 2\n}'], {
      format: "jsonl",
      convert: "none",
      root: "E",
      raw: false,
    });
    expect(out).toBe('{"a":1}\n{"b":2}\n');
  });
});

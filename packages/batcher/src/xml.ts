import { SaxesParser, type SaxesTag } from "saxes";

/**
 * XML batches: each event's own declaration is stripped, the events are
 * wrapped in one root element under one declaration, and the result is
 * checked for well-formedness as the events arrive (one streaming parser per
 * batch, so the check costs one pass over the bytes).
 */

export const XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>';

const BOM = [0xef, 0xbb, 0xbf];
const isSpace = (b: number | undefined) => b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d;

export interface StrippedEvent {
  /** The event without its BOM, leading whitespace and XML declaration. */
  body: Buffer;
  /** The declaration names an encoding other than UTF-8: the bytes cannot be wrapped under a UTF-8 declaration. */
  foreignEncoding: boolean;
}

/** Removes a leading BOM, whitespace and `<?xml …?>` declaration (and the whitespace after it). */
export function stripXmlDeclaration(event: Buffer): StrippedEvent {
  let i = 0;
  if (event[0] === BOM[0] && event[1] === BOM[1] && event[2] === BOM[2]) i = 3;
  while (isSpace(event[i])) i++;
  // `<?xml` followed by whitespace (not `<?xml-stylesheet`).
  if (event.subarray(i, i + 5).toString("latin1") !== "<?xml" || !isSpace(event[i + 5])) {
    return { body: event.subarray(i), foreignEncoding: false };
  }
  const end = event.indexOf("?>", i + 5, "latin1");
  if (end < 0) return { body: event.subarray(i), foreignEncoding: false };
  const decl = event.subarray(i, end).toString("latin1");
  const encoding = /\sencoding\s*=\s*["']([^"']*)["']/.exec(decl)?.[1];
  let j = end + 2;
  while (isSpace(event[j])) j++;
  return {
    body: event.subarray(j),
    foreignEncoding: encoding !== undefined && !/^utf-?8$/i.test(encoding),
  };
}

/** The first and last bytes of a wrapped batch. */
export function xmlBatchHead(root: string): Buffer {
  return Buffer.from(`${XML_DECLARATION}\n<${root}>\n`);
}
export function xmlBatchTail(root: string): Buffer {
  return Buffer.from(`</${root}>\n`);
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Well-formedness of one XML batch, fed event by event as they arrive: the
 * batch is valid when the wrapped document (root, stripped events, end tag)
 * parses. After the first problem the rest is not parsed.
 */
export class XmlBatchChecker {
  private readonly parser = new SaxesParser({ position: false });
  private problem: string | undefined;

  constructor(private readonly root: string) {
    this.parser.on("error", (err) => {
      this.problem ??= err.message;
    });
    this.parser.write(`<${root}>`);
  }

  /** Feeds one event (its declaration already stripped). */
  add(stripped: StrippedEvent): void {
    if (this.problem !== undefined) return;
    if (stripped.foreignEncoding) {
      this.problem = "an event declares an encoding other than UTF-8";
      return;
    }
    let text: string;
    try {
      text = utf8.decode(stripped.body);
    } catch {
      this.problem = "an event is not valid UTF-8";
      return;
    }
    this.parser.write(text);
    this.parser.write("\n");
  }

  /** Ends the document: undefined when it is well-formed, else the first problem. */
  finish(): string | undefined {
    if (this.problem === undefined) {
      this.parser.write(`</${this.root}>`);
      this.parser.close();
    }
    return this.problem;
  }

  get failed(): boolean {
    return this.problem !== undefined;
  }
}

/**
 * XML → JSON (BATCH_CONVERT=json), one object per element directly under the
 * root (normally one per event):
 * - `#name`: the element's name (as written, with any prefix);
 * - `@<attr>`: each attribute, as a string;
 * - `<child>`: each child element, converted the same way but without `#name`;
 *   a name seen more than once becomes an array in document order;
 *   a child with neither attributes nor children becomes its text (a string);
 * - `#text`: the element's text and CDATA, concatenated, trimmed; omitted when blank.
 * Values are never guessed into numbers or booleans.
 */
export type JsonElement = Record<string, unknown>;

interface Frame {
  name: string;
  obj: JsonElement;
  text: string;
  hasStructure: boolean;
}

/** A streaming converter: write() chunks of the wrapped document, take() the finished top-level objects. */
export class XmlToJson {
  private readonly parser = new SaxesParser({ position: false });
  private readonly stack: Frame[] = [];
  private done: JsonElement[] = [];
  private problem: Error | undefined;

  constructor() {
    this.parser.on("error", (err) => {
      this.problem ??= err;
    });
    this.parser.on("opentag", (tag: SaxesTag) => {
      const obj: JsonElement = {};
      // Without the xmlns option every attribute value is a plain string.
      const attributes = tag.attributes as Record<string, string | { value: string }>;
      for (const [k, v] of Object.entries(attributes)) obj[`@${k}`] = typeof v === "string" ? v : v.value;
      this.stack.push({ name: tag.name, obj, text: "", hasStructure: Object.keys(obj).length > 0 });
    });
    const onText = (t: string) => {
      const top = this.stack.at(-1);
      if (top && this.stack.length > 1) top.text += t;
    };
    this.parser.on("text", onText);
    this.parser.on("cdata", onText);
    this.parser.on("closetag", () => {
      const frame = this.stack.pop();
      if (!frame) return;
      const depth = this.stack.length; // 0: the batch root itself
      if (depth === 0) return;
      const text = frame.text.trim();
      if (depth === 1) {
        const out: JsonElement = { "#name": frame.name, ...frame.obj };
        if (text !== "") out["#text"] = text;
        this.done.push(out);
        return;
      }
      const parent = this.stack.at(-1)!;
      parent.hasStructure = true;
      let value: unknown;
      if (!frame.hasStructure) value = text;
      else {
        if (text !== "") frame.obj["#text"] = text;
        value = frame.obj;
      }
      // A child's value is a string or an object, never an array: an array here is one made below.
      const existing = parent.obj[frame.name];
      if (existing === undefined) parent.obj[frame.name] = value;
      else if (Array.isArray(existing)) existing.push(value);
      else parent.obj[frame.name] = [existing, value];
    });
  }

  write(chunk: string): void {
    this.parser.write(chunk);
    if (this.problem) throw this.problem;
  }

  close(): void {
    this.parser.close();
    if (this.problem) throw this.problem;
  }

  /** The top-level objects completed since the last take(). */
  take(): JsonElement[] {
    const out = this.done;
    this.done = [];
    return out;
  }
}

/**
 * Splitting a TCP byte stream into events (pure, tested beside):
 * - lines: one event per line (`\n`, an optional `\r` before it dropped; blank lines skipped);
 * - xml: one event per XML document, ending where its root element closes
 *   (declarations, comments, CDATA, DOCTYPE and quoted attribute values are
 *   stepped over, so a `>` inside them ends nothing).
 * An event longer than the limit is an error: the listener refuses it rather
 * than cutting it in pieces.
 */

export class EventTooLargeError extends Error {
  override name = "EventTooLargeError";
  /** Events completed in the same push() before the one that was too large. */
  framed: Buffer[] = [];
}

/** Runs one push(), handing the events completed before an oversized one over with the error. */
function collecting(body: (out: Buffer[]) => void): Buffer[] {
  const out: Buffer[] = [];
  try {
    body(out);
  } catch (err) {
    if (err instanceof EventTooLargeError) err.framed = out;
    throw err;
  }
  return out;
}

export interface Framer {
  /** Events completed by this chunk, in order. */
  push(chunk: Buffer): Buffer[];
  /** At the end of the stream: the unterminated last event, if any. */
  end(): Buffer[];
}

const isSpace = (b: number) => b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d;

/** Accumulates the bytes of the current event across chunks. */
class Pending {
  private parts: Buffer[] = [];
  length = 0;
  constructor(private readonly max: number) {}
  add(b: Buffer): void {
    if (b.length === 0) return;
    this.length += b.length;
    if (this.length > this.max) throw new EventTooLargeError(`event exceeds ${this.max} bytes`);
    this.parts.push(b);
  }
  take(): Buffer {
    const out = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.length);
    this.parts = [];
    this.length = 0;
    return Buffer.from(out); // a copy: the socket's chunk is not kept alive by one small event
  }
}

export function lineFramer(maxEventBytes: number): Framer {
  const pending = new Pending(maxEventBytes);
  const finish = (out: Buffer[]) => {
    let line = pending.take();
    if (line[line.length - 1] === 0x0d) line = line.subarray(0, -1);
    if (line.some((b) => !isSpace(b))) out.push(line);
  };
  return {
    push(chunk) {
      return collecting((out) => {
        let start = 0;
        for (let nl = chunk.indexOf(0x0a); nl >= 0; nl = chunk.indexOf(0x0a, start)) {
          pending.add(chunk.subarray(start, nl));
          finish(out);
          start = nl + 1;
        }
        pending.add(chunk.subarray(start));
      });
    },
    end() {
      const out: Buffer[] = [];
      if (pending.length > 0) finish(out);
      return out;
    },
  };
}

const enum S {
  Idle,
  Content,
  Lt,
  Pi,
  Bang,
  Comment,
  Cdata,
  Decl,
  StartTag,
  EndTag,
}

export function xmlFramer(maxEventBytes: number): Framer {
  const pending = new Pending(maxEventBytes);
  let state = S.Idle;
  let depth = 0;
  let quote = 0; // the open quote character inside a tag or declaration, 0 when none
  let bracket = 0; // DOCTYPE internal subset nesting
  let bang = ""; // what follows `<!`, until it tells comment, CDATA and declaration apart
  let tail = ""; // the last bytes seen, for `?>`, `-->`, `]]>`
  let lastNonSpace = 0;

  return {
    push(chunk) {
      return collecting((out) => pushXml(chunk, out));
    },
    end() {
      if (pending.length === 0) return [];
      const rest = pending.take();
      state = S.Idle;
      depth = 0;
      return rest.some((b) => !isSpace(b)) ? [rest] : [];
    },
  };

  function pushXml(chunk: Buffer, out: Buffer[]): void {
    let start = 0; // first byte of `chunk` not yet in `pending`
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i]!;
      let complete = false;
      switch (state) {
        case S.Idle:
          if (isSpace(b)) {
            start = i + 1;
            continue;
          }
          state = S.Content;
          if (b === 0x3c) state = S.Lt;
          break;
        case S.Content:
          if (b === 0x3c) state = S.Lt;
          break;
        case S.Lt:
          if (b === 0x3f) {
            state = S.Pi;
            tail = "";
          } else if (b === 0x21) {
            state = S.Bang;
            bang = "";
          } else if (b === 0x2f) state = S.EndTag;
          else {
            state = S.StartTag;
            quote = 0;
            lastNonSpace = b;
          }
          break;
        case S.Pi:
          tail = (tail + String.fromCharCode(b)).slice(-2);
          if (tail === "?>") state = S.Content;
          break;
        case S.Bang:
          bang += String.fromCharCode(b);
          if (bang === "--") {
            state = S.Comment;
            tail = "";
          } else if (bang === "[CDATA[") {
            state = S.Cdata;
            tail = "";
          } else if (!"--".startsWith(bang) && !"[CDATA[".startsWith(bang)) {
            state = S.Decl;
            quote = 0;
            bracket = 0;
            i--; // this byte belongs to the declaration
          }
          break;
        case S.Comment:
          tail = (tail + String.fromCharCode(b)).slice(-3);
          if (tail === "-->") state = S.Content;
          break;
        case S.Cdata:
          tail = (tail + String.fromCharCode(b)).slice(-3);
          if (tail === "]]>") state = S.Content;
          break;
        case S.Decl:
          if (quote !== 0) {
            if (b === quote) quote = 0;
          } else if (b === 0x22 || b === 0x27) quote = b;
          else if (b === 0x5b) bracket++;
          else if (b === 0x5d) bracket--;
          else if (b === 0x3e && bracket <= 0) state = S.Content;
          break;
        case S.StartTag:
          if (quote !== 0) {
            if (b === quote) quote = 0;
          } else if (b === 0x22 || b === 0x27) quote = b;
          else if (b === 0x3e) {
            state = S.Content;
            if (lastNonSpace === 0x2f) complete = depth === 0;
            else depth++;
          }
          if (!isSpace(b)) lastNonSpace = b;
          break;
        case S.EndTag:
          if (b === 0x3e) {
            state = S.Content;
            depth = Math.max(0, depth - 1);
            complete = depth === 0;
          }
          break;
      }
      if (complete) {
        pending.add(chunk.subarray(start, i + 1));
        out.push(pending.take());
        start = i + 1;
        state = S.Idle;
        depth = 0;
      }
    }
    pending.add(chunk.subarray(start));
  }
}

import { closeSync, openSync, writeSync } from "node:fs";
import { open, rm } from "node:fs/promises";

/**
 * A batch's events on disk while its window is open, so a window of any size
 * costs a file, not memory. Records are `[u32 LE length][bytes]`. Writes are
 * synchronous into a 64 KiB buffer (one syscall per 64 KiB, not per event);
 * the buffer is written out before the spool is read back.
 */

const BUFFER_BYTES = 64 * 1024;
const READ_BYTES = 1024 * 1024;

export class SpoolWriter {
  private fd: number | undefined;
  private readonly buffer = Buffer.allocUnsafe(BUFFER_BYTES);
  private used = 0;
  /** Event bytes written (without the length prefixes). */
  bytes = 0;
  events = 0;

  constructor(readonly path: string) {
    this.fd = openSync(path, "wx", 0o600);
  }

  append(event: Uint8Array): void {
    if (this.fd === undefined) throw new Error("spool is closed");
    if (this.used + 4 > BUFFER_BYTES) this.flush();
    this.buffer.writeUInt32LE(event.length, this.used);
    this.used += 4;
    if (event.length > BUFFER_BYTES - this.used) {
      this.flush();
      if (event.length > BUFFER_BYTES) {
        writeAll(this.fd, event);
        this.count(event.length);
        return;
      }
    }
    this.buffer.set(event, this.used);
    this.used += event.length;
    this.count(event.length);
  }

  private count(n: number) {
    this.bytes += n;
    this.events++;
  }

  private flush(): void {
    if (this.fd === undefined || this.used === 0) return;
    writeAll(this.fd, this.buffer.subarray(0, this.used));
    this.used = 0;
  }

  /** Writes out what is buffered and closes the file (it stays, for reading back). */
  finish(): void {
    this.flush();
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  async remove(): Promise<void> {
    this.finish();
    await rm(this.path, { force: true });
  }
}

function writeAll(fd: number, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) off += writeSync(fd, data, off, data.length - off);
}

/** The events of a finished spool, in order (each a fresh Buffer or a view of the read buffer; use before the next). */
export async function* readSpool(path: string): AsyncGenerator<Buffer> {
  const fh = await open(path, "r");
  try {
    let carry = Buffer.alloc(0);
    for (;;) {
      const chunk = Buffer.allocUnsafe(READ_BYTES);
      const { bytesRead } = await fh.read(chunk, 0, READ_BYTES, null);
      if (bytesRead === 0) break;
      let data = carry.length > 0 ? Buffer.concat([carry, chunk.subarray(0, bytesRead)]) : chunk.subarray(0, bytesRead);
      let off = 0;
      while (data.length - off >= 4) {
        const len = data.readUInt32LE(off);
        if (data.length - off - 4 < len) break;
        yield data.subarray(off + 4, off + 4 + len);
        off += 4 + len;
      }
      carry = Buffer.from(data.subarray(off));
      data = Buffer.alloc(0);
    }
    if (carry.length > 0) throw new Error(`spool ${path} ends inside a record`);
  } finally {
    await fh.close();
  }
}

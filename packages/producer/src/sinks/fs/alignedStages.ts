/**
 * Page-aligned staging buffers for direct I/O. O_DIRECT wants the buffer
 * address aligned to the device's logical block size, and a Node Buffer's
 * address is not (a large one sits 16 bytes past a page boundary). The
 * buffer of a WebAssembly.Memory is mapped page-aligned by V8, so slices of
 * one at multiples of STAGE_BYTES are aligned too; no native code needed.
 */

/** One stage: a multiple of every logical block size in use (512 B – 64 KiB). */
export const STAGE_BYTES = 1024 * 1024;
/** Stages per WebAssembly.Memory: one address-space reservation serves several. */
const STAGES_PER_SLAB = 8;
const WASM_PAGE_BYTES = 64 * 1024;

interface WasmMemory {
  readonly buffer: ArrayBuffer;
}
// The global exists in every Node release we support; the lib typings used here leave it out.
const { Memory } = (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number }) => WasmMemory } })
  .WebAssembly;

/**
 * A bounded pool: `take()` gives a free stage or undefined when `limit` are
 * out (the caller then writes the ordinary way instead of waiting). Stages
 * are kept for reuse; memory grows to the largest number out at once.
 */
export class StagePool {
  readonly #free: Buffer[] = [];
  #out = 0;
  #cannotGrow = false;

  constructor(private readonly limit: number) {}

  take(): Buffer | undefined {
    if (this.#out >= this.limit) return undefined;
    if (this.#free.length === 0) {
      if (this.#cannotGrow) return undefined;
      let slab: ArrayBuffer;
      try {
        slab = new Memory({ initial: (STAGE_BYTES * STAGES_PER_SLAB) / WASM_PAGE_BYTES }).buffer;
      } catch {
        // V8 reserves address space for each memory; a process limited in it (ulimit -v)
        // gets a RangeError: it keeps the stages it has and writes the rest the ordinary way.
        this.#cannotGrow = true;
        return undefined;
      }
      for (let i = 0; i < STAGES_PER_SLAB; i++) this.#free.push(Buffer.from(slab, i * STAGE_BYTES, STAGE_BYTES));
    }
    this.#out++;
    return this.#free.pop();
  }

  give(stage: Buffer): void {
    this.#out--;
    this.#free.push(stage);
  }

  /** Stages handed out and not given back. */
  get out(): number {
    return this.#out;
  }
}

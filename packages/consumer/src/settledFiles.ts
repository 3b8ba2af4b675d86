/**
 * Files the consumer is done with but must remember (published and left in
 * place, or failed and left in place), in fixed-size records rather than one
 * object per file: ~90 bytes per file, so a million resident files cost
 * ~90 MB instead of several hundred. A record is keyed by a 53-bit hash of
 * the path (not the path itself); the caller always has the path at hand
 * when it asks (a walk, an event).
 *
 * Records live in dense columns (swap-removal keeps them dense); an
 * open-addressing index (linear probing, at most half full) maps a key to its
 * record.
 */

const FINGERPRINT_BYTES = 32;
const EMPTY = 0xffffffff;

export type SettledState = "done" | "failed";

export interface SettledRecord {
  size: number;
  mtimeMs: number;
  ino: number;
  ctimeMs: number;
  state: SettledState;
  /** Hex SHA-256 of the published version (done files). */
  fingerprint?: string | undefined;
  /** When its fingerprint record was last written (ms). */
  recordedAt?: number | undefined;
  /** The poll that last saw it. */
  seenInScan: number;
}

/** A settled file as a walk or an event sees it: its record, and the key to update it by. */
export interface SettledView extends SettledRecord {
  readonly key: number;
}

/** cyrb53: a fast 53-bit string hash (exact in a double); collisions among a million paths: ~1 in 10,000 runs. */
export function pathKey(rel: string): number {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < rel.length; i++) {
    const c = rel.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return 4294967296 * (2097151 & h2) + (h1 >>> 0);
}

export class SettledFiles {
  #count = 0;
  #capacity: number;
  #keys: Float64Array;
  /** size, mtimeMs, ino, ctimeMs per record. */
  #identity: Float64Array;
  #recordedAt: Float64Array;
  #seen: Uint32Array;
  /** 0 failed, 1 done, 2 done with a fingerprint. */
  #state: Uint8Array;
  #fingerprints: Uint8Array;
  /** Slot → record index (EMPTY when free). */
  #index: Uint32Array;

  constructor(initialCapacity = 1024) {
    this.#capacity = initialCapacity;
    this.#keys = new Float64Array(initialCapacity);
    this.#identity = new Float64Array(initialCapacity * 4);
    this.#recordedAt = new Float64Array(initialCapacity);
    this.#seen = new Uint32Array(initialCapacity);
    this.#state = new Uint8Array(initialCapacity);
    this.#fingerprints = new Uint8Array(initialCapacity * FINGERPRINT_BYTES);
    this.#index = new Uint32Array(initialCapacity * 2).fill(EMPTY);
  }

  get size(): number {
    return this.#count;
  }

  has(rel: string): boolean {
    return this.#find(pathKey(rel)) >= 0;
  }

  get(rel: string): SettledView | undefined {
    const key = pathKey(rel);
    const i = this.#find(key);
    return i < 0 ? undefined : this.#view(i, key);
  }

  /** Remembers a settled file (replacing what was remembered for its path). */
  set(rel: string, rec: SettledRecord): void {
    const key = pathKey(rel);
    let i = this.#find(key);
    if (i < 0) {
      if (this.#count === this.#capacity) this.#grow();
      i = this.#count++;
      this.#keys[i] = key;
      this.#insertIndex(key, i);
    }
    const id = i * 4;
    this.#identity[id] = rec.size;
    this.#identity[id + 1] = rec.mtimeMs;
    this.#identity[id + 2] = rec.ino;
    this.#identity[id + 3] = rec.ctimeMs;
    this.#recordedAt[i] = rec.recordedAt ?? 0;
    this.#seen[i] = rec.seenInScan >>> 0;
    const fp = rec.state === "done" && rec.fingerprint?.length === FINGERPRINT_BYTES * 2 ? rec.fingerprint : undefined;
    this.#state[i] = rec.state === "failed" ? 0 : fp ? 2 : 1;
    if (fp) this.#fingerprints.set(Buffer.from(fp, "hex"), i * FINGERPRINT_BYTES);
  }

  /** Forgets a path; returns what was remembered. */
  delete(rel: string): SettledView | undefined {
    const key = pathKey(rel);
    const i = this.#find(key);
    if (i < 0) return undefined;
    const view = this.#view(i, key);
    this.#remove(i);
    return view;
  }

  markSeen(key: number, scanId: number): void {
    const i = this.#find(key);
    if (i >= 0) this.#seen[i] = scanId >>> 0;
  }

  setRecordedAt(key: number, at: number): void {
    const i = this.#find(key);
    if (i >= 0) this.#recordedAt[i] = at;
  }

  /** Forgets every file the poll `scanId` did not see; returns them (each once) to `gone`. */
  sweep(scanId: number, gone: (view: SettledView) => void): void {
    const want = scanId >>> 0;
    for (let i = 0; i < this.#count;) {
      if (this.#seen[i] === want) {
        i++;
        continue;
      }
      gone(this.#view(i, this.#keys[i]!));
      // Swap-removal moves the last record into i: look at i again.
      this.#remove(i);
    }
  }

  /** Done files with a fingerprint recorded before `before` (lazily: the set may be large). */
  *dueForRefresh(before: number): Generator<SettledView> {
    for (let i = 0; i < this.#count; i++) {
      if (this.#state[i] === 2 && this.#recordedAt[i]! < before) yield this.#view(i, this.#keys[i]!);
    }
  }

  counts(): { done: number; failed: number } {
    let failed = 0;
    for (let i = 0; i < this.#count; i++) if (this.#state[i] === 0) failed++;
    return { done: this.#count - failed, failed };
  }

  #view(i: number, key: number): SettledView {
    const id = i * 4;
    const state = this.#state[i]!;
    return {
      key,
      size: this.#identity[id]!,
      mtimeMs: this.#identity[id + 1]!,
      ino: this.#identity[id + 2]!,
      ctimeMs: this.#identity[id + 3]!,
      state: state === 0 ? "failed" : "done",
      fingerprint:
        state === 2
          ? Buffer.from(
              this.#fingerprints.buffer,
              this.#fingerprints.byteOffset + i * FINGERPRINT_BYTES,
              FINGERPRINT_BYTES,
            ).toString("hex")
          : undefined,
      recordedAt: this.#recordedAt[i]!,
      seenInScan: this.#seen[i]!,
    };
  }

  #slotOf(key: number): number {
    // Low bits of the hash pick the slot; the index size is a power of two.
    return (key % 4294967296) & (this.#index.length - 1);
  }

  /** The record index of `key`, or -1. */
  #find(key: number): number {
    const mask = this.#index.length - 1;
    for (let s = this.#slotOf(key); ; s = (s + 1) & mask) {
      const i = this.#index[s]!;
      if (i === EMPTY) return -1;
      if (this.#keys[i] === key) return i;
    }
  }

  #findSlot(key: number): number {
    const mask = this.#index.length - 1;
    for (let s = this.#slotOf(key); ; s = (s + 1) & mask) {
      const i = this.#index[s]!;
      if (i === EMPTY) return -1;
      if (this.#keys[i] === key) return s;
    }
  }

  #insertIndex(key: number, i: number): void {
    const mask = this.#index.length - 1;
    let s = this.#slotOf(key);
    while (this.#index[s] !== EMPTY) s = (s + 1) & mask;
    this.#index[s] = i;
  }

  /** Removes record i: its index slot (backward-shift deletion), then the last record moves into i. */
  #remove(i: number): void {
    const mask = this.#index.length - 1;
    let hole = this.#findSlot(this.#keys[i]!);
    for (let s = (hole + 1) & mask; this.#index[s] !== EMPTY; s = (s + 1) & mask) {
      const home = this.#slotOf(this.#keys[this.#index[s]!]!);
      // The entry at s may move into the hole if its home is not between the hole and s (cyclically).
      const between = hole <= s ? home > hole && home <= s : home > hole || home <= s;
      if (!between) {
        this.#index[hole] = this.#index[s]!;
        hole = s;
      }
    }
    this.#index[hole] = EMPTY;
    const last = --this.#count;
    if (i !== last) {
      const lastSlot = this.#findSlot(this.#keys[last]!);
      this.#index[lastSlot] = i;
      this.#keys[i] = this.#keys[last]!;
      this.#identity.copyWithin(i * 4, last * 4, last * 4 + 4);
      this.#recordedAt[i] = this.#recordedAt[last]!;
      this.#seen[i] = this.#seen[last]!;
      this.#state[i] = this.#state[last]!;
      this.#fingerprints.copyWithin(i * FINGERPRINT_BYTES, last * FINGERPRINT_BYTES, (last + 1) * FINGERPRINT_BYTES);
    }
  }

  #grow(): void {
    const cap = this.#capacity * 2;
    const grow = <T extends Float64Array | Uint32Array | Uint8Array>(a: T, make: (n: number) => T, per = 1): T => {
      const b = make(cap * per);
      b.set(a);
      return b;
    };
    this.#keys = grow(this.#keys, (n) => new Float64Array(n));
    this.#identity = grow(this.#identity, (n) => new Float64Array(n), 4);
    this.#recordedAt = grow(this.#recordedAt, (n) => new Float64Array(n));
    this.#seen = grow(this.#seen, (n) => new Uint32Array(n));
    this.#state = grow(this.#state, (n) => new Uint8Array(n));
    this.#fingerprints = grow(this.#fingerprints, (n) => new Uint8Array(n), FINGERPRINT_BYTES);
    this.#capacity = cap;
    this.#index = new Uint32Array(cap * 2).fill(EMPTY);
    for (let i = 0; i < this.#count; i++) this.#insertIndex(this.#keys[i]!, i);
  }
}

/**
 * Helpers for the reliability suites (chaos, cluster node loss, disk full):
 * a seeded PRNG, deterministic file contents of any size written with flat
 * memory, streaming SHA-256, a recursive lister that sees dotfiles, and the
 * tally that turns an output tree into lost / corrupted / duplicate / partial
 * counts.
 */
import { createCipheriv, createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, readdir, rename } from "node:fs/promises";
import { dirname, join, relative, sep } from "node:path";
import { pipeline } from "node:stream/promises";

/** mulberry32: a small, fast, seedable PRNG; returns floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Integer in [min, max] (inclusive) from `rng`. */
export function randInt(rng: () => number, min: number, max: number): number {
  return min + Math.floor(rng() * (max - min + 1));
}

/**
 * Deterministic pseudo-random bytes for `key`: AES-256-CTR over zeros, so any
 * size is cheap to produce (GB/s) and the same key always gives the same bytes.
 */
export function* seededBytes(key: string, size: number, chunk = 1024 * 1024): Generator<Buffer> {
  const k = createHash("sha256").update(`key:${key}`).digest();
  const iv = createHash("sha256").update(`iv:${key}`).digest().subarray(0, 16);
  const cipher = createCipheriv("aes-256-ctr", k, iv);
  const zeros = Buffer.alloc(Math.min(chunk, Math.max(size, 1)));
  let left = size;
  while (left > 0) {
    const n = Math.min(left, zeros.length);
    yield cipher.update(zeros.subarray(0, n));
    left -= n;
  }
}

/**
 * Renames `from` to `to`, creating `to`'s parents again if they are gone: a
 * consumer removes input subdirectories that stayed empty for STABILITY_MS,
 * which a slow write elsewhere (the temp name) can outlast, as any writer
 * into a watched tree must expect.
 */
async function renameInto(from: string, to: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    await mkdir(dirname(to), { recursive: true });
    try {
      await rename(from, to);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT" || attempt >= 5) throw err;
    }
  }
}

/**
 * Writes `size` seeded bytes to `path` (parents created) and returns their
 * SHA-256. With `via` the bytes go to that temp name first and are renamed
 * into place, so a watcher never sees a partial file.
 */
export async function writeSeededFile(
  path: string,
  key: string,
  size: number,
  opts: { via?: string } = {},
): Promise<string> {
  await mkdir(dirname(path), { recursive: true });
  const target = opts.via ?? path;
  const hash = createHash("sha256");
  const fh = await open(target, "w");
  try {
    for (const piece of seededBytes(key, size)) {
      hash.update(piece);
      let off = 0;
      while (off < piece.length) off += (await fh.write(piece, off, piece.length - off)).bytesWritten;
    }
  } finally {
    await fh.close();
  }
  if (opts.via) await renameInto(opts.via, path);
  return hash.digest("hex");
}

/** Streaming SHA-256 of a file (flat memory for any size). */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  await pipeline(createReadStream(path), hash);
  return hash.digest("hex");
}

/** Every non-directory entry under `root` (dotfiles included), '/'-separated and sorted. */
export async function walkFiles(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string) => {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else out.push(relative(root, p).split(sep).join("/"));
    }
  };
  await walk(root);
  return out.sort();
}

/** Temp or partial names that must never remain in an output tree. */
export function isPartialName(rel: string): boolean {
  const base = rel.slice(rel.lastIndexOf("/") + 1);
  return base.startsWith(".filerelay-") || base.endsWith(".tmp") || base.endsWith(".part") || base.startsWith(".");
}

export interface ExpectedFile {
  /** Original base name (unique within a run). */
  name: string;
  sha256: string;
  size: number;
}

export interface OutputFile {
  rel: string;
  sha256: string;
}

export interface RelayTally {
  files: number;
  /** Expected files with no correct copy in the output. */
  lost: number;
  /** Output files that are no correct copy of any expected file (wrong bytes, or unknown). */
  corrupted: number;
  /** Correct copies beyond the first, summed over files. */
  duplicates: number;
  /** Temp / partial files found. */
  partial: number;
  /** Up to 10 examples of each problem, for failure messages. */
  examples: string[];
}

/**
 * Compares an output tree with what was sent. `originalName` recovers the
 * original base name from an output path (undefined when it cannot); a copy
 * counts as correct when that name is expected and its bytes hash to the
 * expected SHA-256. Zero-byte files share one hash, so the name is the key.
 */
export function tallyRelay(
  expected: readonly ExpectedFile[],
  outputs: readonly OutputFile[],
  originalName: (rel: string) => string | undefined,
  partialFiles: readonly string[] = [],
): RelayTally {
  const byName = new Map(expected.map((e) => [e.name, e]));
  if (byName.size !== expected.length) throw new Error("expected file names must be unique");
  const copies = new Map<string, number>();
  const examples: string[] = [];
  let corrupted = 0;
  for (const o of outputs) {
    const name = originalName(o.rel);
    const want = name === undefined ? undefined : byName.get(name);
    if (!want || want.sha256 !== o.sha256) {
      corrupted++;
      if (examples.length < 10) examples.push(`corrupted/unknown: ${o.rel} (sha256 ${o.sha256.slice(0, 12)})`);
      continue;
    }
    copies.set(want.name, (copies.get(want.name) ?? 0) + 1);
  }
  let lost = 0;
  let duplicates = 0;
  for (const e of expected) {
    const n = copies.get(e.name) ?? 0;
    if (n === 0) {
      lost++;
      if (examples.length < 20) examples.push(`lost: ${e.name} (${e.size} bytes)`);
    } else if (n > 1) {
      duplicates += n - 1;
      if (examples.length < 30) examples.push(`duplicate: ${e.name} ×${n}`);
    }
  }
  for (const p of partialFiles.slice(0, 5)) examples.push(`partial: ${p}`);
  return { files: expected.length, lost, corrupted, duplicates, partial: partialFiles.length, examples };
}

/** Hashes every non-partial output file; returns the hashes and the partial names separately. */
export async function readOutputTree(root: string): Promise<{ outputs: OutputFile[]; partial: string[] }> {
  const all = await walkFiles(root);
  const partial = all.filter(isPartialName);
  const outputs: OutputFile[] = [];
  for (const rel of all) {
    if (isPartialName(rel)) continue;
    outputs.push({ rel, sha256: await sha256File(join(root, rel)) });
  }
  return { outputs, partial };
}

/**
 * Writes every collected log line of `services` to `file` (JSON lines, each
 * tagged with its service and pid): kept for a failed reliability run.
 */
export async function dumpServiceLogs(
  services: Iterable<{ name: string; pid: number; logs(): object[]; stderr(): string }>,
  file: string,
): Promise<void> {
  const { writeFile } = await import("node:fs/promises");
  const lines: string[] = [];
  for (const s of services) {
    for (const l of s.logs()) lines.push(JSON.stringify({ svc: s.name, pid: s.pid, ...l }));
    if (s.stderr()) lines.push(JSON.stringify({ svc: s.name, pid: s.pid, stderr: s.stderr() }));
  }
  await writeFile(file, `${lines.join("\n")}\n`);
}

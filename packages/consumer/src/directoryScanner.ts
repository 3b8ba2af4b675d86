import { lstatSync, realpathSync, type Stats } from "node:fs";
import { realpath, stat } from "node:fs/promises";
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from "node:path";
import fg from "fast-glob";
import { DirectoryWalk, emptyResult, type ScanResult, type WalkOptions } from "./directoryWalk.js";
import { GlobMatcher } from "./globMatcher.js";

export type { ScanResult, WalkOptions } from "./directoryWalk.js";

/** Names no writer means as finished files (DESIGN §4); dotfiles are skipped by the glob itself. */
export const ALWAYS_SKIPPED_EXTENSIONS = [".tmp", ".part", ".partial", ".crdownload", ".swp"] as const;

export interface DirectoryScannerOptions {
  inputDir: string;
  filePattern: string;
  excludePatterns: readonly string[];
  readyMarkerSuffix?: string | undefined;
  followSymlinks: boolean;
  /** Directories to leave out even when they lie inside inputDir (ARCHIVE_DIR, ERROR_DIR). */
  excludedDirs: readonly (string | undefined)[];
}

export interface ScannedFile {
  /** Path relative to INPUT_DIR, '/'-separated. */
  rel: string;
  size: number;
  mtimeMs: number;
  ino: number;
  /** Status change time: set by the kernel on every write or rename, so a copy that keeps mtimes still changes it. */
  ctimeMs: number;
  /** Set for a followed symlink: the resolved target, inside INPUT_DIR. */
  target?: string;
  /** Set when the path must never be read (a symlink resolving outside INPUT_DIR). */
  refused?: string;
}

/** What the caller knows of a path (DirectorySource's tracked files have these fields). */
export interface KnownFile {
  size: number;
  mtimeMs: number;
  ino: number;
  ctimeMs: number;
  target?: string | undefined;
  refused?: string | undefined;
}

/** A pattern without '/' matches at any depth, as operators expect from `*.csv`. */
export function toDeepPattern(pattern: string): string {
  let p = pattern.trim().replace(/^\.\//, "");
  if (p.endsWith("/")) p = `${p}**`;
  return p.includes("/") ? p : `**/${p}`;
}

/**
 * Lists INPUT_DIR (polling is the source of truth). Never leaves
 * INPUT_DIR: symlinked directories are not entered, and a symlinked file is
 * only resolved when FOLLOW_SYMLINKS is on, and refused when its target lies
 * outside.
 */
export class DirectoryScanner {
  readonly root: string;
  readonly #options: DirectoryScannerOptions;
  readonly #matcher: GlobMatcher;
  /** Relative '/'-separated prefixes of excluded directories inside INPUT_DIR. */
  readonly #excludedPrefixes: string[];
  #realRoot: string | undefined;

  constructor(options: DirectoryScannerOptions) {
    this.#options = options;
    this.root = resolve(options.inputDir);
    const patterns = [toDeepPattern(options.filePattern)];
    if (options.readyMarkerSuffix) patterns.push(`**/*${fg.escapePath(options.readyMarkerSuffix)}`);
    this.#excludedPrefixes = [];
    const ignore = [
      ...ALWAYS_SKIPPED_EXTENSIONS.map((ext) => `**/*${ext}`),
      ...options.excludePatterns.map(toDeepPattern),
    ];
    // Compared as real paths: INPUT_DIR reached through a symlink (or ARCHIVE_DIR
    // named through one) must still keep the archive out of the walk, or the
    // consumer would publish its own archive again and again.
    const realRoot = realPathOf(this.root);
    for (const dir of options.excludedDirs) {
      if (dir === undefined) continue;
      const rel = relative(realRoot, realPathOf(resolve(dir)));
      if (rel === "" || rel.startsWith("..") || isAbsolute(rel)) continue;
      const posix = rel.split(sep).join("/");
      this.#excludedPrefixes.push(`${posix}/`);
      const escaped = fg.escapePath(posix);
      ignore.push(escaped, `${escaped}/**`);
    }
    this.#matcher = new GlobMatcher(this.root, patterns, ignore);
  }

  /** The absolute path of a relative one. */
  absolute(rel: string): string {
    return join(this.root, ...rel.split("/"));
  }

  /**
   * Cheap pre-filter for file-system events: true when `rel` can never be a
   * candidate whatever the patterns say (dotfile, temp name, excluded dir).
   */
  isIgnoredPath(rel: string): boolean {
    if (this.#excludedPrefixes.some((p) => rel === p.slice(0, -1) || rel.startsWith(p))) return true;
    const segments = rel.split("/");
    if (segments.some((s) => s.startsWith("."))) return true;
    const name = segments[segments.length - 1] ?? "";
    return ALWAYS_SKIPPED_EXTENSIONS.some((ext) => name.endsWith(ext));
  }

  /**
   * Would a scan list this path as a candidate, were it a regular file? (Not a
   * marker, not ignored, selected by the patterns.) Lets a file-system event
   * for a new file be handled without a scan.
   */
  isCandidate(rel: string): boolean {
    return this.markerTarget(rel) === undefined && !this.isIgnoredPath(rel) && this.#matcher.matches(rel);
  }

  /** Is this the ready marker of another file? Returns that file's relative path. */
  markerTarget(rel: string): string | undefined {
    const suffix = this.#options.readyMarkerSuffix;
    if (!suffix || !rel.endsWith(suffix) || rel.length === suffix.length) return undefined;
    return rel.slice(0, -suffix.length);
  }

  /**
   * Lists INPUT_DIR, one directory stream per directory (polling is the
   * source of truth), selecting entries as fast-glob would (GlobMatcher). The
   * whole listing at once: tests and small trees; the consumer walks in steps
   * (walk()) so that a huge INPUT_DIR is never held in memory.
   *
   * - No options: every candidate is lstat'ed and returned in `files`.
   * - `isKnown` (light scan, after file-system events): paths it knows come
   *   back in `known` without a stat, so discovering one new file in a
   *   directory of 10,000 costs one directory read and one lstat, not 10,000 lstats.
   * - `known` (poll): paths it knows are lstat'ed too (a file that changed
   *   without an event must be noticed), but one whose size, mtime and inode
   *   are those it was given comes back in `unchanged` (as the object
   *   `known` returned), without a ScannedFile.
   *
   * Known paths are not matched against the patterns again: they were
   * candidates when first seen, and the patterns do not change.
   */
  async scan<K extends KnownFile = KnownFile>(options: WalkOptions<K> = {}): Promise<ScanResult<K>> {
    const walk = this.walk(options);
    const all = emptyResult<K>();
    try {
      while (!walk.done) {
        const r = await walk.step(4096);
        all.files.push(...r.files);
        for (const m of r.markers) all.markers.add(m);
        all.skipped.push(...r.skipped);
        all.known.push(...r.known);
        all.unchanged.push(...r.unchanged);
        all.dirs.push(...r.dirs);
      }
    } finally {
      await walk.close();
    }
    return all;
  }

  /** A resumable walk of INPUT_DIR (or of `dirs` below it), read in steps of bounded size. */
  walk<K extends KnownFile = KnownFile>(
    options: WalkOptions<K> = {},
    dirs: readonly string[] = [""],
  ): DirectoryWalk<K> {
    return new DirectoryWalk<K>(
      (rel) => (rel === "" ? this.root : this.#absoluteFast(rel)),
      (dir, name, isDir, result) => this.#visit(dir, name, isDir, result, options),
      dirs,
    );
  }

  /** One directory entry of a walk: descends, records a marker, or stats and classifies a candidate. */
  async #visit<K extends KnownFile>(
    dir: string,
    name: string,
    isDir: boolean,
    result: ScanResult<K>,
    options: WalkOptions<K>,
  ): Promise<"descend" | "candidate" | undefined> {
    this.#realRoot ??= await realpath(this.root);
    const { isKnown, known } = options;
    const suffix = this.#options.readyMarkerSuffix;
    const rel = dir === "" ? name : `${dir}/${name}`;
    if (isDir) return this.#mayDescend(rel, name) ? "descend" : undefined;
    if (suffix !== undefined && suffix !== "" && rel.endsWith(suffix) && rel.length > suffix.length) {
      if (this.#matcher.matches(rel)) result.markers.add(rel.slice(0, -suffix.length));
      return undefined;
    }
    if (isKnown?.(rel)) {
      result.known.push(rel);
      return "candidate";
    }
    const was = known?.(rel);
    if (was === undefined && !this.#matcher.matches(rel)) return undefined;
    // Synchronous lstat: a promise lstat costs several times the CPU of the
    // system call itself (thread-pool hop, promise, FSReqCallback), and a poll
    // stats every resident file. The walk yields to the event loop between slices.
    let st: Stats | undefined;
    try {
      st = lstatSync(this.#absoluteFast(rel), { throwIfNoEntry: false });
    } catch {
      st = undefined;
    }
    if (st === undefined) {
      if (rel.includes("\uFFFD")) {
        // Names are decoded as UTF-8: one that is not valid UTF-8 comes back with
        // U+FFFD, and no string path can open it (nor could ce-subject carry it).
        result.skipped.push({
          rel,
          reason: "the file name is not valid UTF-8, so it cannot be opened or relayed; rename the file",
          warn: true,
        });
      }
    } else if (st.isFile()) {
      if (
        was !== undefined &&
        was.target === undefined &&
        was.refused === undefined &&
        st.size === was.size &&
        st.mtimeMs === was.mtimeMs &&
        st.ino === was.ino &&
        st.ctimeMs === was.ctimeMs
      ) {
        result.unchanged.push(was);
      } else {
        result.files.push({ rel, size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, ctimeMs: st.ctimeMs });
      }
    } else {
      await this.#classify(rel, st, result);
    }
    return "candidate";
  }

  /**
   * What a file-system event's path holds now, classified as a walk would:
   * a candidate file (or refused symlink) in `files`, or why it is skipped.
   * undefined: gone, or not a candidate.
   */
  async inspect(rel: string): Promise<ScanResult | undefined> {
    const slash = rel.lastIndexOf("/");
    const result = emptyResult();
    const got = await this.#visit(slash < 0 ? "" : rel.slice(0, slash), rel.slice(slash + 1), false, result, {});
    return got === "candidate" ? result : undefined;
  }

  /** Directories the walk enters: never ARCHIVE_DIR/ERROR_DIR, dot directories only when a pattern could match inside. */
  #mayDescend(rel: string, name: string): boolean {
    if (name.startsWith(".") && !this.#matcher.mayMatchDotSegments) return false;
    return !this.#excludedPrefixes.some((p) => p.length === rel.length + 1 && p.startsWith(rel));
  }

  /** absolute() without splitting and re-joining: the walk's paths are already normalized. */
  #absoluteFast(rel: string): string {
    return sep === "/" ? `${this.root}/${rel}` : this.absolute(rel);
  }

  async #classify(rel: string, st: Stats, result: ScanResult<KnownFile>): Promise<void> {
    if (st.isFile()) {
      result.files.push({ rel, size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, ctimeMs: st.ctimeMs });
    } else if (st.isSymbolicLink()) {
      if (!this.#options.followSymlinks) {
        result.skipped.push({ rel, reason: "symlink (FOLLOW_SYMLINKS=false)" });
        return;
      }
      const resolved = await this.resolveSymlink(rel);
      if (resolved === undefined) return;
      if ("refused" in resolved) {
        result.files.push({ rel, size: 0, mtimeMs: 0, ino: 0, ctimeMs: 0, refused: resolved.refused });
      } else if ("notFile" in resolved) {
        result.skipped.push({ rel, reason: "symlink to something other than a regular file" });
      } else {
        result.files.push({ rel, ...resolved });
      }
    } else if (!st.isDirectory()) {
      result.skipped.push({ rel, reason: "not a regular file" });
    }
  }

  /**
   * Resolves a symlinked file. undefined: it vanished or dangles; `refused`: it
   * resolves outside INPUT_DIR; otherwise its target's identity.
   */
  async resolveSymlink(
    rel: string,
  ): Promise<
    | { size: number; mtimeMs: number; ino: number; ctimeMs: number; target: string }
    | { refused: string }
    | { notFile: true }
    | undefined
  > {
    this.#realRoot ??= await realpath(this.root);
    let target: string;
    let st;
    try {
      target = await realpath(this.absolute(rel));
      st = await stat(target);
    } catch {
      return undefined;
    }
    // Linked directories are never entered, wherever they point.
    if (!st.isFile()) return { notFile: true };
    if (!target.startsWith(this.#realRoot + sep)) {
      return { refused: `symlink resolves outside INPUT_DIR (to ${target})` };
    }
    return { size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, ctimeMs: st.ctimeMs, target };
  }
}

/**
 * The real path of `path`, also for one that does not exist yet (ARCHIVE_DIR is
 * created on first use): its nearest existing ancestor resolved, the rest appended.
 */
export function realPathOf(path: string): string {
  const missing: string[] = [];
  let current = path;
  for (;;) {
    try {
      return join(realpathSync(current), ...missing.reverse());
    } catch {
      const parent = dirname(current);
      if (parent === current) return path;
      missing.push(basename(current));
      current = parent;
    }
  }
}

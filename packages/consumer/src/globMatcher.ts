import { resolve } from "node:path";
// fast-glob's own pattern helpers (micromatch underneath), so that a path the
// scanner's own walk lists is selected exactly as fast-glob would select it:
// same brace expansion, same micromatch options, ignore patterns matched with
// `dot: true`. directoryScanner.test.ts compares the two on a hostile tree.
import * as fgPattern from "fast-glob/out/utils/pattern.js";

/** The micromatch options fast-glob derives from our settings (dot: false, everything else default). */
const MICROMATCH_OPTIONS = {
  dot: false,
  matchBase: false,
  nobrace: false,
  nocase: false,
  noext: false,
  noglobstar: false,
  posix: true,
  strictSlashes: false,
} as const;

/** fast-glob's pattern preparation: braces expanded, duplicate slashes removed. */
function prepare(patterns: readonly string[]): string[] {
  return fgPattern.expandPatternsWithBraceExpansion([...patterns]).map((p) => fgPattern.removeDuplicateSlashes(p));
}

/**
 * Decides, for a regular (non-directory) entry, what
 * `fg(patterns, { ignore, dot: false, onlyFiles: false })` decides for it.
 * Matching is a pure function of the relative path, so a caller may skip it
 * for paths it already knows to be candidates.
 */
export class GlobMatcher {
  readonly #positive: RegExp[];
  readonly #negative: RegExp[];
  readonly #absoluteNegative: RegExp[];
  readonly #cwd: string;
  /** Could a positive pattern match a path with a segment starting with '.'? (Only a literal dot can.) */
  readonly mayMatchDotSegments: boolean;

  constructor(cwd: string, patterns: readonly string[], ignore: readonly string[]) {
    this.#cwd = cwd;
    const all = prepare(patterns);
    const positive = all.filter((p) => fgPattern.isPositivePattern(p));
    const negative = [...all.filter((p) => fgPattern.isNegativePattern(p)), ...prepare(ignore)].map((p) =>
      fgPattern.convertToPositivePattern(p),
    );
    const [absoluteNegative = [], relativeNegative = []] = fgPattern.partitionAbsoluteAndRelative(negative);
    this.#positive = fgPattern.convertPatternsToRe(positive, MICROMATCH_OPTIONS);
    this.#negative = fgPattern.convertPatternsToRe(relativeNegative, { ...MICROMATCH_OPTIONS, dot: true });
    this.#absoluteNegative = fgPattern.convertPatternsToRe(absoluteNegative, { ...MICROMATCH_OPTIONS, dot: true });
    // Conservative: a leading literal dot, "/.", or any class, group or escape.
    this.mayMatchDotSegments = positive.some((p) => p.startsWith(".") || p.includes("/.") || /[[(\\]/.test(p));
  }

  /** Is this '/'-separated relative path of a non-directory entry selected? */
  matches(rel: string): boolean {
    if (!fgPattern.matchAny(rel, this.#positive)) return false;
    if (this.#negative.length > 0 && fgPattern.matchAny(rel, this.#negative)) return false;
    if (this.#absoluteNegative.length > 0 && fgPattern.matchAny(resolve(this.#cwd, rel), this.#absoluteNegative)) {
      return false;
    }
    return true;
  }
}

/** File-name globs (`*`, `?`), matched against a base name, case-insensitive (pure). */
export function globMatcher(patterns: readonly string[]): (filename: string) => boolean {
  const res = patterns.map(
    (p) =>
      new RegExp(
        `^${p
          .split("")
          .map((c) => (c === "*" ? ".*" : c === "?" ? "." : c.replace(/[.+^${}()|[\]\\]/g, "\\$&")))
          .join("")}$`,
        "i",
      ),
  );
  return (filename) => res.some((re) => re.test(filename));
}

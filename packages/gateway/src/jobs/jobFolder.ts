import { lstat, readdir, realpath } from "node:fs/promises";
import { isAbsolute, join, relative, resolve, sep } from "node:path";
import picomatch from "picomatch";
import { HttpError } from "../httpError.js";

/** Is `path` (already resolved) `root` itself or inside it? */
export function isInside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === "" || (!rel.startsWith("..") && !isAbsolute(rel) && rel.split(sep)[0] !== "..");
}

/**
 * Refusals that need no file system: an absolute path is required, and any
 * '..' segment is refused outright (never resolved), so a request cannot
 * climb out of a root by spelling.
 */
export function checkFolderSpelling(folder: string): void {
  if (!isAbsolute(folder)) {
    throw new HttpError(
      400,
      "REQUEST_INVALID",
      `source_folder must be an absolute path, got ${JSON.stringify(folder)}`,
    );
  }
  if (folder.split(/[/\\]/).includes("..")) {
    throw new HttpError(403, "JOB_ROOT_REFUSED", "source_folder must not contain '..' segments");
  }
}

/**
 * The real path of a job's folder, if it is under one of GATEWAY_JOB_ROOTS
 * once every symlink is resolved (403 otherwise: a link inside a root that
 * points out of it is refused like any other outside folder).
 */
export async function resolveJobFolder(roots: readonly string[] | undefined, folder: string): Promise<string> {
  if (!roots || roots.length === 0)
    throw new HttpError(403, "JOB_ROOT_REFUSED", "upload jobs are off (no GATEWAY_JOB_ROOTS)");
  checkFolderSpelling(folder);
  const spelled = resolve(folder);
  if (!roots.some((r) => isInside(resolve(r), spelled))) {
    throw new HttpError(403, "JOB_ROOT_REFUSED", `${folder} is not under GATEWAY_JOB_ROOTS`);
  }
  let real: string;
  try {
    real = await realpath(spelled);
  } catch {
    throw new HttpError(404, "NOT_FOUND", `source_folder ${folder} does not exist`);
  }
  const realRoots = await Promise.all(roots.map((r) => realpath(r).catch(() => resolve(r))));
  if (!realRoots.some((r) => isInside(r, real))) {
    throw new HttpError(403, "JOB_ROOT_REFUSED", `${folder} leads out of GATEWAY_JOB_ROOTS through a symlink`);
  }
  const s = await lstat(real);
  if (!s.isDirectory()) throw new HttpError(400, "REQUEST_INVALID", `source_folder ${folder} is not a directory`);
  return real;
}

/**
 * Relative paths ('/'-separated, sorted) of the regular files under `dir`
 * matching `pattern`. Symlinks are never followed (neither files nor
 * directories), so nothing outside the folder is ever read; dotfiles match
 * only a pattern that names them.
 */
export async function listJobFiles(dir: string, pattern: string): Promise<string[]> {
  const matches = picomatch(pattern, { dot: false });
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  const out: string[] = [];
  for (const e of entries) {
    if (!e.isFile()) continue;
    const rel = relative(dir, join(e.parentPath, e.name)).split(sep).join("/");
    if (matches(rel)) out.push(rel);
  }
  return out.sort();
}

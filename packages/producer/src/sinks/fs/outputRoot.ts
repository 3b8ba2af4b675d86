import { constants } from "node:fs";
import { access, stat } from "node:fs/promises";
import { errnoCode, makeDirectory } from "@filerelay/core/internal";

/** Who this process writes as, for messages about permissions. */
function whoAmI(): string {
  const uid = process.getuid?.();
  const gid = process.getgid?.();
  return uid === undefined ? "this process" : `uid ${uid}${gid === undefined ? "" : ` gid ${gid}`}`;
}

/**
 * Why OUTPUT_DIR cannot take output, or undefined when it can: it must be a
 * directory this process may create entries in. With `create`, a missing
 * OUTPUT_DIR is created first (at start-up); without, a missing one is a
 * problem (readiness must not create directories as a side effect).
 */
export async function outputRootProblem(root: string, opts: { create: boolean }): Promise<string | undefined> {
  if (opts.create) {
    try {
      await makeDirectory(root);
    } catch (err) {
      const code = errnoCode(err) ?? "error";
      if (code === "ENOTDIR") return `${root} is not a directory (or a component of its path is a file)`;
      return `cannot create ${root} as ${whoAmI()} (${code})`;
    }
  }
  try {
    if (!(await stat(root)).isDirectory()) return `${root} is not a directory`;
  } catch (err) {
    const code = errnoCode(err) ?? "error";
    return code === "ENOENT" ? `${root} does not exist` : `cannot reach ${root} as ${whoAmI()} (${code})`;
  }
  try {
    await access(root, constants.W_OK | constants.X_OK);
  } catch (err) {
    const code = errnoCode(err) ?? "error";
    const hint = code === "EROFS" ? "a read-only filesystem" : "check its owner and mode, e.g. chown it to this user";
    return `${root} is not writable by ${whoAmI()} (${code}: ${hint})`;
  }
  return undefined;
}

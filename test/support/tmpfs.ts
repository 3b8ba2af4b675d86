import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** Can this process mount a tmpfs (Linux, root or CAP_SYS_ADMIN)? Tests of a really full disk need one. */
export async function tmpfsMountWorks(): Promise<boolean> {
  if (process.platform !== "linux") return false;
  const probe = await mkdtemp(join(tmpdir(), "tmpfs-probe-"));
  try {
    await run("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", probe]);
    await run("umount", [probe]);
    return true;
  } catch {
    return false;
  } finally {
    await rm(probe, { recursive: true, force: true });
  }
}

#!/usr/bin/env node
// The `filerelay` command. A plain launcher rather than dist/main.js itself: it
// exists before the first build, so `pnpm install` can link it onto the PATH.
import { existsSync } from "node:fs";

const main = new URL("../dist/main.js", import.meta.url);
if (!existsSync(main)) {
  process.stderr.write("filerelay: the CLI is not built yet; run `pnpm build` in the filerelay repository\n");
  process.exit(1);
}
await import(main.href);

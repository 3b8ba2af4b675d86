// Writes docs/envelope.schema.json from the zod schema in @filerelay/core
// (run `pnpm build` first). A test fails when the committed file is stale.
import { writeFileSync } from "node:fs";
import { envelopeJsonSchema } from "../packages/core/dist/index.js";

const target = new URL("../docs/envelope.schema.json", import.meta.url);
writeFileSync(target, JSON.stringify(envelopeJsonSchema(), null, 2) + "\n");
console.log(`wrote ${target.pathname}`);

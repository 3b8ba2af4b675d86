import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { provision, silentLogger } from "@filerelay/core/internal";
import { freePort, startNats, startService, waitFor } from "./support/index.js";
import {
  chainConsumerEnv,
  landed,
  mirrorProducerEnv,
  startTransformer,
  transformerEnv,
  transformerReady,
} from "./transformer-support.js";

// The transformer at start: refusing a group bound to another subject, and what /metrics shows after one file.

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "transformer-startup-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Binds `groups` to `subject` on stream FILES, as a service configured for that subject would. */
async function bindGroups(url: string, subject: string, groups: string[]): Promise<void> {
  const nc = await connect({ servers: url });
  try {
    await provision(nc, { STREAM: "FILES", SUBJECT: subject, STREAM_REPLICAS: 1 }, { log: silentLogger(), groups });
  } finally {
    await nc.close();
  }
}

async function durables(url: string): Promise<Map<string, string | undefined>> {
  const nc = await connect({ servers: url });
  try {
    const jsm = await jetstreamManager(nc);
    const out = new Map<string, string | undefined>();
    for await (const c of jsm.consumers.list("FILES")) out.set(c.name, c.config.filter_subject);
    return out;
  } finally {
    await nc.close();
  }
}

/** prom-client's text format: the value of the first sample of `name` carrying every label in `labels`. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split("\n")) {
    const m = /^(\w+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = new Map([...(m[2] ?? "").matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1]!, l[2]!]));
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) return Number(m[3]);
  }
  return undefined;
}

describe("transformer start-up", () => {
  it("refuses a SINK_GROUPS group bound to another subject: exit 78 naming the group, its subject and the variable", async () => {
    await using nats = await startNats();
    // The plain stack ran before: its producers' group reads files.input.
    await bindGroups(nats.url, "files.input", ["file-producers"]);
    await using transformer = startTransformer(transformerEnv(nats.url, root, { SINK_GROUPS: "file-producers" }));
    expect(await transformer.exited(60_000)).toBe(78);
    const err = transformer.stderr();
    expect(err).toContain("SINK_GROUPS: group file-producers is already bound to subject files.input");
    expect(err).toContain("on OUTPUT_SUBJECT files.processed");
    expect(err).toContain("change SINK_GROUPS");
    // Refused before anything was provisioned: no transformer group, the sink group untouched.
    expect(await durables(nats.url)).toEqual(new Map([["file-producers", "files.input"]]));
  });

  it("refuses a TRANSFORM_GROUP bound to another subject, and names every bad group at once", async () => {
    await using nats = await startNats();
    await bindGroups(nats.url, "files.other", ["transformers", "s3-producers"]);
    await using transformer = startTransformer(
      transformerEnv(nats.url, root, { SINK_GROUPS: "file-producers,s3-producers" }),
    );
    expect(await transformer.exited(60_000)).toBe(78);
    const err = transformer.stderr();
    expect(err).toContain("2 problems");
    expect(err).toContain("TRANSFORM_GROUP: group transformers is already bound to subject files.other");
    expect(err).toContain("on SUBJECT files.input");
    expect(err).toContain("change TRANSFORM_GROUP");
    expect(err).toContain("SINK_GROUPS: group s3-producers is already bound to subject files.other");
    expect((await durables(nats.url)).has("file-producers")).toBe(false);
  });

  it("starts when its groups are new or already on the right subjects", async () => {
    await using nats = await startNats();
    await bindGroups(nats.url, "files.input", ["transformers"]);
    await bindGroups(nats.url, "files.processed", ["file-producers"]);
    await using transformer = startTransformer(
      transformerEnv(nats.url, root, { SINK_GROUPS: "file-producers,s3-producers" }),
    );
    await transformerReady(transformer, 60_000);
    expect(await durables(nats.url)).toEqual(
      new Map([
        ["transformers", "files.input"],
        ["file-producers", "files.processed"],
        ["s3-producers", "files.processed"],
      ]),
    );
  });

  it("shows files by step and outcome, step durations and bytes in /metrics after one archive", async () => {
    await using nats = await startNats();
    const port = await freePort();
    await using transformer = startTransformer(transformerEnv(nats.url, root, { HTTP_PORT: String(port) }));
    await transformerReady(transformer, 60_000);
    const base = `http://127.0.0.1:${port}`;
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);

    await mkdir(join(root, "input"), { recursive: true });
    await using _consumer = startService("consumer", chainConsumerEnv(nats.url, root));
    const out = join(root, "out");
    await using _producer = startService(
      "producer",
      mirrorProducerEnv(nats.url, out, { FILENAME_TEMPLATE: "{{.RelDir}}/{{.ShortID}}-{{.Name}}{{.Ext}}" }),
    );

    const src = join(root, "src");
    await mkdir(join(src, "reports"), { recursive: true });
    const csv = "region,amount\nnorth,1\nsouth,2\n";
    await writeFile(join(src, "reports/q1.csv"), csv);
    execFileSync("tar", ["-czf", join(root, "bundle.tar.gz"), "-C", src, "reports"]);
    execFileSync("cp", [join(root, "bundle.tar.gz"), join(root, "input/bundle.tar.gz")]);

    // The archive, its CSV entry and the CSV's Parquet file.
    await waitFor(async () => (await landed(out)).length >= 3, {
      timeoutMs: 120_000,
      message: "the archive, its entry and the Parquet file to land",
    });
    const text = await waitFor(
      async () => {
        const t = await (await fetch(`${base}/metrics`)).text();
        return sample(t, "filerelay_files_total", { group: "transformers", outcome: "acked" }) === 1 ? t : undefined;
      },
      { timeoutMs: 30_000, message: "the consumed archive to be counted as acked" },
    );
    expect(sample(text, "filerelay_transform_steps_total", { step: "unpack", outcome: "done" })).toBe(1);
    expect(sample(text, "filerelay_transform_steps_total", { step: "convert", outcome: "done" })).toBe(1);
    expect(sample(text, "filerelay_transform_step_duration_seconds_count", { step: "unpack" })).toBe(1);
    expect(sample(text, "filerelay_transform_step_duration_seconds_count", { step: "convert" })).toBe(1);
    expect(sample(text, "filerelay_transform_step_duration_seconds_sum", { step: "convert" })).toBeGreaterThan(0);
    expect(sample(text, "filerelay_transform_bytes_total", { direction: "in" })).toBeGreaterThan(0);
    expect(sample(text, "filerelay_transform_bytes_total", { direction: "out" })).toBeGreaterThan(0);
    expect(sample(text, "filerelay_transform_outputs_total", { kind: "derived" })).toBe(2);
    expect(sample(text, "filerelay_files_total", { group: "transformers", outcome: "dead_lettered" })).toBeUndefined();
    expect(sample(text, "filerelay_transform_steps_total", { outcome: "failed" })).toBeUndefined();
    expect(sample(text, "filerelay_nats_connected")).toBe(1);
  });
});

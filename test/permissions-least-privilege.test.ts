/**
 * Least privilege (issue 9 item 7): the pipeline runs against a nats-server
 * configured with exactly the permission files shipped in deploy/nats/
 * (consumer and producer users), relaying one inline and one object payload
 * and dead-lettering one file; the server reports no permission violation;
 * and each user is refused what it has no business doing.
 */
import { execFile } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterEach, beforeEach, describe, expect, it, onTestFailed } from "vitest";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { openStatusLedger } from "@filerelay/core/internal";
import { connect } from "@nats-io/transport-node";
import { findNatsServer, startNats, startService, waitFor } from "./support/index.js";
import { readDeadLetters } from "./producer-support.js";
import { consumerReady, producerReady, repoRoot, sha256hex, treeHashes, waitWritten } from "./support/pipeline.js";

const run = promisify(execFile);
const deployDir = join(repoRoot, "deploy", "nats");

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "perm-it-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

/** A permission file with its comments dropped, as inlined into the test server's config. */
const permissionFile = async (name: string) => readFile(join(deployDir, "permissions", name), "utf8");

describe("least privilege (deploy/nats permissions)", () => {
  it("the shipped example server config is valid (nats-server -t) once the password variables are set", async () => {
    const bin = findNatsServer();
    expect(bin).toBeDefined();
    const dir = join(root, "conf");
    await cp(deployDir, dir, { recursive: true });
    const conf = (await readFile(join(dir, "nats-server.conf"), "utf8")).replace(
      "/var/lib/nats/jetstream",
      join(root, "js"),
    );
    await writeFile(join(dir, "nats-server.conf"), conf);
    const env = {
      ...process.env,
      FILERELAY_CONSUMER_PASSWORD: "c",
      FILERELAY_PRODUCER_PASSWORD: "p",
      FILERELAY_ADMIN_PASSWORD: "a",
    };
    const ok = await run(bin!, ["-c", join(dir, "nats-server.conf"), "-t"], { env });
    expect(ok.stderr + ok.stdout).toMatch(/is valid/);
    // Without the variables the config refuses to load rather than running with empty passwords.
    const missing = await run(bin!, ["-c", join(dir, "nats-server.conf"), "-t"]).then(
      () => "loaded",
      (err: { stderr?: string }) => err.stderr ?? "",
    );
    expect(missing).toMatch(/FILERELAY_CONSUMER_PASSWORD/);
  });

  it("relays inline and object payloads and dead-letters under exactly those permissions; refuses the rest", async () => {
    const pw = { consumer: randomUUID(), producer: randomUUID(), admin: randomUUID() };
    const config = [
      await permissionFile("consumer.conf"),
      await permissionFile("producer.conf"),
      "authorization {",
      "  users = [",
      `    { user: consumer, password: "${pw.consumer}", permissions: $FILERELAY_CONSUMER_PERMISSIONS }`,
      `    { user: producer, password: "${pw.producer}", permissions: $FILERELAY_PRODUCER_PERMISSIONS }`,
      `    { user: admin, password: "${pw.admin}" }`,
      "  ]",
      "}",
    ].join("\n");
    await using nats = await startNats({ config });
    const input = join(root, "in");
    const output = join(root, "out");
    await mkdir(input);
    await using consumer = startService("consumer", {
      NATS_URL: nats.url,
      NATS_USER: "consumer",
      NATS_PASSWORD: pw.consumer,
      INPUT_DIR: input,
      SOURCE: "perm",
      POLL_INTERVAL_MS: "200",
      STABILITY_MS: "200",
      DELETE_AFTER_PROCESSING: "true",
      INLINE_MAX_BYTES: "65536",
    });
    // The consumer provisions everything first (the producer may only inspect streams).
    await consumerReady(consumer);
    await using producer = startService("producer", {
      NATS_URL: nats.url,
      NATS_USER: "producer",
      NATS_PASSWORD: pw.producer,
      OUTPUT_DIR: output,
      ORGANIZE_BY: "none",
      FILENAME_TEMPLATE: "{{.Name}}{{.Ext}}",
      ALLOWED_CONTENT_TYPES: "text/plain,application/octet-stream",
    });
    await producerReady(producer);
    onTestFailed(() => {
      console.log(
        nats
          .output()
          .split("\n")
          .filter((l) => /Violation|ERR/.test(l))
          .slice(-30)
          .join("\n"),
      );
      for (const svc of [consumer, producer])
        console.log(
          svc.name,
          svc
            .logs()
            .filter((l) => l.level !== "debug" && l.msg !== "NATS status")
            .slice(-15)
            .map((l) => JSON.stringify(l).slice(0, 500))
            .join("\n"),
        );
    });

    const inline = Buffer.from(`small and inline ${randomUUID()}\n`);
    const object = randomBytes(3 * 1024 * 1024 + 17);
    await writeFile(join(input, "small.txt"), inline);
    await writeFile(join(input, "large.bin"), object);
    await writeFile(join(input, "picture.png"), "not allowed here\n");
    await waitWritten(producer, 2, 20_000);

    await using admin = await connect({ servers: nats.url, user: "admin", pass: pw.admin });
    const dead = await waitFor(
      async () => {
        const d = await readDeadLetters(admin, "file-producers");
        return d.length > 0 ? d : undefined;
      },
      { message: "the dead letter of picture.png" },
    );
    expect(dead.map((d) => [d.headers["ce-filename"], d.code])).toEqual([["picture.png", "CONTENT_TYPE_NOT_ALLOWED"]]);
    expect(await treeHashes(output)).toEqual([
      { rel: "large.bin", sha256: sha256hex(object), size: object.length },
      { rel: "small.txt", sha256: sha256hex(inline), size: inline.length },
    ]);
    // The ledger was written under these permissions: each side its own entries.
    const ledger = await openStatusLedger(admin, { by: "test", provision: false });
    const records = await waitFor(async () => {
      const list = await ledger.list({ limit: 10 });
      return list.length === 3 && list.every((r) => r.state !== "published") ? list : undefined;
    });
    await ledger.close();
    expect(records.map((r) => [r.subject, r.state]).sort()).toEqual([
      ["large.bin", "delivered"],
      ["picture.png", "failed"],
      ["small.txt", "delivered"],
    ]);
    const published = consumer.logs().filter((l) => l.outcome === "published");
    expect(published.map((l) => [l.path, l.payload]).sort()).toEqual([
      ["large.bin", "object"],
      ["picture.png", "inline"],
      ["small.txt", "inline"],
    ]);
    // Nothing the services did was refused by the server.
    for (const svc of [consumer, producer]) {
      expect(JSON.stringify(svc.logs()), svc.name).not.toMatch(/[Pp]ermissions? [Vv]iolation/);
    }
    expect(nats.output()).not.toMatch(/Violation/);

    // What each user must NOT be able to do.
    const refusals: Record<string, boolean> = {};
    const refused = async (
      label: string,
      user: "consumer" | "producer",
      attempt: (nc: NatsLike) => Promise<unknown>,
    ) => {
      const nc = await connect({ servers: nats.url, user, pass: pw[user], timeout: 3000 });
      try {
        const outcome = await attempt(nc).then(
          () => "allowed",
          (err: Error) => `${err.name}: ${err.message}`,
        );
        refusals[label] = outcome !== "allowed";
        expect(outcome, label).toMatch(/permission|timeout|TimeoutError/i);
      } finally {
        await nc.close();
      }
    };
    type NatsLike = Awaited<ReturnType<typeof connect>>;
    const jsmOf = (nc: NatsLike) => jetstreamManager(nc, { timeout: 2000, checkAPI: false });
    await refused("consumer deletes stream FILES", "consumer", async (nc) => (await jsmOf(nc)).streams.delete("FILES"));
    await refused("consumer purges stream FILES", "consumer", async (nc) => (await jsmOf(nc)).streams.purge("FILES"));
    await refused("consumer deletes the producers' durable", "consumer", async (nc) =>
      (await jsmOf(nc)).consumers.delete("FILES", "file-producers"),
    );
    await refused("consumer publishes a dead letter", "consumer", async (nc) =>
      jetstream(nc, { timeout: 2000 }).publish("filerelay.dlq.file-producers", "forged"),
    );
    await refused("producer publishes an envelope", "producer", async (nc) =>
      jetstream(nc, { timeout: 2000 }).publish("files.input", "forged"),
    );
    await refused("producer deletes stream FILES", "producer", async (nc) => (await jsmOf(nc)).streams.delete("FILES"));
    await refused("producer writes the consumer's fingerprints", "producer", async (nc) => {
      const kv = await new Kvm(nc).open("FILES_fingerprints");
      return kv.put("forged", "x");
    });
    await refused("producer pulls another group's durable", "producer", async (nc) => {
      const c = await jetstream(nc, { timeout: 2000 }).consumers.get("FILES", "audit");
      return c.next({ expires: 1000 });
    });
    await refused("producer records a source entry in the ledger", "producer", async (nc) =>
      jetstream(nc, { timeout: 2000 }).publish(
        "filerelay.status.FILES.00000000-0000-5000-8000-000000000000.src.published.x.y._._",
        "{}",
      ),
    );
    await refused("consumer records a group's delivery in the ledger", "consumer", async (nc) =>
      jetstream(nc, { timeout: 2000 }).publish(
        "filerelay.status.FILES.00000000-0000-5000-8000-000000000000.g-file-producers.delivered.x.y._._",
        "{}",
      ),
    );
    // And the server logged each refusal as a violation.
    const violations = () =>
      nats.output().match(/(Publish|Subscription) Violation - User "(consumer|producer)"/g) ?? [];
    await waitFor(() => violations().length >= Object.keys(refusals).length, {
      message: "the server to log the refused operations",
    });
    const allowedByMistake = Object.entries(refusals).filter(([, ok]) => !ok);
    expect(allowedByMistake).toEqual([]);
    console.log(
      `permissions: relayed=2 (inline=1 object=1) dead-lettered=1 violations-during-pipeline=0 refused=${Object.keys(refusals).length}/${Object.keys(refusals).length}`,
    );
  });
});

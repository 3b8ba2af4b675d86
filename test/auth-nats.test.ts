/**
 * Authentication and TLS (issue 9 item 6): consumer and producer connect to a
 * nats-server that requires user/password, a token, an nkey, a creds file
 * (operator/account/user JWTs, MEMORY resolver) and TLS with a private CA
 * (server-only and mutual), and relay one file through each. Wrong
 * credentials make a service exit non-zero after a bounded number of attempts
 * with one clear error naming the server, and no secret appears in any log.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { nkeys } from "@nats-io/nats-core";
import { startNats, startService, type NatsServer } from "./support/index.js";
import { allOutput, consumerReady, producerReady, sha256hex, treeHashes, waitWritten } from "./support/pipeline.js";
import { makeTestPki, type TestPki } from "./support/tls.js";

// Services run from packages/*/dist: `pnpm build` first (pnpm test does).

let root: string;
let pki: TestPki;
const results: { method: string; relayed: boolean; rejectedExit?: number | null; leaked: boolean }[] = [];

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "auth-it-"));
  pki = await makeTestPki();
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
  await pki[Symbol.asyncDispose]();
  const relayed = results.filter((r) => r.relayed).length;
  const rejected = results.filter((r) => r.rejectedExit !== undefined && r.rejectedExit !== 0).length;
  const leaks = results.filter((r) => r.leaked).length;
  console.log(
    `auth: methods=${results.length} relayed=${relayed} wrong-credentials-rejected=${rejected} secret-leaks=${leaks} (${results
      .map((r) => r.method)
      .join(", ")})`,
  );
});

// ---------------------------------------------------------------------------
// JWT (nats-io/jwt v2) built by hand: header.payload signed with ed25519 nkeys.

const b64url = (b: Uint8Array | string) => Buffer.from(b).toString("base64url");

function signJwt(claims: Record<string, unknown>, signer: nkeys.KeyPair): string {
  const header = b64url(JSON.stringify({ typ: "JWT", alg: "ed25519-nkey" }));
  const body = {
    jti: randomBytes(20).toString("hex").toUpperCase(),
    iat: Math.floor(Date.now() / 1000),
    iss: signer.getPublicKey(),
    ...claims,
  };
  const payload = b64url(JSON.stringify(body));
  const sig = b64url(signer.sign(new TextEncoder().encode(`${header}.${payload}`)));
  return `${header}.${payload}.${sig}`;
}

interface JwtSetup {
  serverConfig: string;
  creds: string;
  /** A creds file for a user the server never heard of (signed by an unknown account). */
  strangerCreds: string;
  userSeed: string;
}

function credsFile(jwt: string, seed: string): string {
  return `-----BEGIN NATS USER JWT-----\n${jwt}\n------END NATS USER JWT------\n\n************************* IMPORTANT *************************\nNKEY Seed printed below can be used to sign and prove identity.\n\n-----BEGIN USER NKEY SEED-----\n${seed}\n------END USER NKEY SEED------\n`;
}

function jwtSetup(): JwtSetup {
  const operator = nkeys.createOperator();
  const sys = nkeys.createAccount();
  const account = nkeys.createAccount();
  const user = nkeys.createUser();
  const unlimited = { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 };
  const operatorJwt = signJwt(
    {
      name: "filerelay-test-operator",
      sub: operator.getPublicKey(),
      nats: { type: "operator", version: 2, system_account: sys.getPublicKey() },
    },
    operator,
  );
  const sysJwt = signJwt(
    { name: "SYS", sub: sys.getPublicKey(), nats: { type: "account", version: 2, limits: unlimited } },
    operator,
  );
  const accountJwt = signJwt(
    {
      name: "FILERELAY",
      sub: account.getPublicKey(),
      nats: {
        type: "account",
        version: 2,
        limits: { ...unlimited, mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 },
      },
    },
    operator,
  );
  const userJwt = signJwt(
    {
      name: "filerelay-service",
      sub: user.getPublicKey(),
      nats: { type: "user", version: 2, pub: {}, sub: {}, subs: -1, data: -1, payload: -1 },
    },
    account,
  );
  const dec = new TextDecoder();
  // A well-formed creds file from an account the server does not know.
  const rogueAccount = nkeys.createAccount();
  const rogueUser = nkeys.createUser();
  const rogueJwt = signJwt(
    {
      name: "rogue",
      sub: rogueUser.getPublicKey(),
      nats: { type: "user", version: 2, pub: {}, sub: {}, subs: -1, data: -1, payload: -1 },
    },
    rogueAccount,
  );
  const userSeed = dec.decode(user.getSeed());
  return {
    serverConfig: [
      `operator: "${operatorJwt}"`,
      `system_account: ${sys.getPublicKey()}`,
      "resolver: MEMORY",
      "resolver_preload: {",
      `  ${sys.getPublicKey()}: "${sysJwt}"`,
      `  ${account.getPublicKey()}: "${accountJwt}"`,
      "}",
    ].join("\n"),
    creds: credsFile(userJwt, userSeed),
    strangerCreds: credsFile(rogueJwt, dec.decode(rogueUser.getSeed())),
    userSeed,
  };
}

// ---------------------------------------------------------------------------

interface Case {
  method: string;
  /** Environment for both services (credentials). */
  env: Record<string, string>;
  /** Strings that must never appear in any output. */
  secrets: string[];
}

/** Starts a consumer and a producer with `env`, relays one file, checks bytes and that no secret leaked. */
async function relayOne(nats: NatsServer, c: Case): Promise<void> {
  const dir = join(root, c.method.replace(/\W+/g, "-"));
  const input = join(dir, "in");
  const output = join(dir, "out");
  await mkdir(input, { recursive: true });
  const common = { NATS_URL: nats.url, ...c.env };
  await using consumer = startService("consumer", {
    ...common,
    INPUT_DIR: input,
    SOURCE: "auth",
    POLL_INTERVAL_MS: "200",
    STABILITY_MS: "200",
    DELETE_AFTER_PROCESSING: "true",
  });
  await using producer = startService("producer", {
    ...common,
    OUTPUT_DIR: output,
    ORGANIZE_BY: "none",
    FILENAME_TEMPLATE: "{{.Name}}{{.Ext}}",
  });
  await Promise.all([consumerReady(consumer), producerReady(producer)]);
  const content = Buffer.from(`relayed with ${c.method} ${randomUUID()}\n`);
  await writeFile(join(input, "hello.txt"), content);
  await waitWritten(producer, 1);
  expect(await treeHashes(output)).toEqual([{ rel: "hello.txt", sha256: sha256hex(content), size: content.length }]);
  expect(await consumer.stop()).toBe(0);
  expect(await producer.stop()).toBe(0);
  const leaked = [consumer, producer].some((svc) => c.secrets.some((s) => allOutput(svc).includes(s)));
  expect(leaked, `a ${c.method} secret appeared in the logs`).toBe(false);
  results.push({ method: c.method, relayed: true, leaked });
}

/**
 * A service given wrong credentials: exits non-zero after 3 attempts, with
 * one fatal line naming the server and the auth problem, few retry warnings
 * spaced by backoff, and no secret anywhere.
 */
async function rejectWrong(nats: NatsServer, method: string, env: Record<string, string>, secrets: string[]) {
  const started = Date.now();
  await using svc = startService("consumer", {
    NATS_URL: nats.url,
    ...env,
    INPUT_DIR: root,
    SOURCE: "auth",
  });
  const code = await svc.exited(60_000);
  const elapsed = Date.now() - started;
  expect(code, `${method}: exit code`).toBe(1);
  const stderr = svc.stderr();
  const fatal = stderr.split("\n").filter((l) => l.includes("fatal"));
  expect(fatal, `${method}: one fatal line`).toHaveLength(1);
  expect(fatal[0]).toContain("NATS_AUTH_FAILED");
  expect(fatal[0]).toContain(nats.url);
  const retries = svc.logs().filter((l) => l.msg === "NATS not reachable yet, retrying");
  // No tight reconnect loop: at most 2 retries before giving up, spaced by backoff.
  expect(retries.length, `${method}: retries`).toBeLessThanOrEqual(2);
  expect(elapsed, `${method}: gave up after backing off`).toBeGreaterThan(retries.length * 300);
  expect(svc.logs().some((l) => l.msg === "connected to NATS")).toBe(false);
  const leaked = secrets.some((s) => allOutput(svc).includes(s));
  expect(leaked, `${method}: secret leaked in output`).toBe(false);
  const prior = results.find((r) => r.method === method);
  if (prior) prior.rejectedExit = code;
  else results.push({ method, relayed: false, rejectedExit: code, leaked });
}

describe("authentication and TLS", () => {
  it("user/password: relays a file; a wrong password exits 1 after 3 attempts, secret never logged", async () => {
    const password = `pw-${randomUUID()}`;
    await using nats = await startNats({ user: "relay", password });
    await relayOne(nats, {
      method: "user/password",
      env: { NATS_USER: "relay", NATS_PASSWORD: password },
      secrets: [password],
    });
    const wrong = `wrong-${randomUUID()}`;
    await rejectWrong(nats, "user/password", { NATS_USER: "relay", NATS_PASSWORD: wrong }, [wrong, password]);
  });

  it("token: relays a file; a wrong token exits 1, secret never logged", async () => {
    const token = `tok-${randomUUID()}`;
    await using nats = await startNats({ token });
    await relayOne(nats, { method: "token", env: { NATS_TOKEN: token }, secrets: [token] });
    const wrong = `badtok-${randomUUID()}`;
    await rejectWrong(nats, "token", { NATS_TOKEN: wrong }, [wrong, token]);
  });

  it("nkey (NATS_NKEY_SEED_FILE): relays a file; an unknown nkey exits 1, seed never logged", async () => {
    const user = nkeys.createUser();
    const seed = new TextDecoder().decode(user.getSeed());
    const seedFile = join(root, "user.nk");
    await writeFile(seedFile, `${seed}\n`, { mode: 0o600 });
    await using nats = await startNats({
      config: `authorization { users = [ { nkey: ${user.getPublicKey()} } ] }`,
    });
    await relayOne(nats, { method: "nkey", env: { NATS_NKEY_SEED_FILE: seedFile }, secrets: [seed] });
    const stranger = nkeys.createUser();
    const strangerSeed = new TextDecoder().decode(stranger.getSeed());
    const strangerFile = join(root, "stranger.nk");
    await writeFile(strangerFile, strangerSeed, { mode: 0o600 });
    await rejectWrong(nats, "nkey", { NATS_NKEY_SEED_FILE: strangerFile }, [strangerSeed, seed]);
  });

  it("creds file (operator/account/user JWTs, MEMORY resolver): relays a file; an unknown account exits 1", async () => {
    const setup = jwtSetup();
    const credsPath = join(root, "service.creds");
    await writeFile(credsPath, setup.creds, { mode: 0o600 });
    await using nats = await startNats({ config: setup.serverConfig });
    await relayOne(nats, { method: "creds (JWT)", env: { NATS_CREDS: credsPath }, secrets: [setup.userSeed] });
    const rogue = join(root, "rogue.creds");
    await writeFile(rogue, setup.strangerCreds, { mode: 0o600 });
    const rogueSeed = /SU[A-Z0-9]{56}/.exec(setup.strangerCreds)?.[0] ?? "";
    expect(rogueSeed).not.toBe("");
    await rejectWrong(nats, "creds (JWT)", { NATS_CREDS: rogue }, [rogueSeed, setup.userSeed]);
  });

  it("TLS with a private CA (NATS_TLS_CA): relays a file; without the CA the connection is refused", async () => {
    await using nats = await startNats({
      config: `tls { cert_file: "${pki.serverCert}", key_file: "${pki.serverKey}" }`,
    });
    await relayOne(nats, { method: "tls", env: { NATS_TLS_CA: pki.caCert }, secrets: [] });
    // Trusting another CA only: the server certificate does not verify; the service must not connect.
    await using svc = startService("consumer", {
      NATS_URL: nats.url,
      NATS_TLS_CA: pki.otherCaCert,
      INPUT_DIR: root,
      SOURCE: "auth",
    });
    await svc.waitForLog((l) => l.msg === "NATS not reachable yet, retrying", 30_000, "a failed TLS attempt");
    const warn = svc.logs().find((l) => l.msg === "NATS not reachable yet, retrying")!;
    expect(String(warn.err)).toMatch(/certificate|self.signed|verify/i);
    expect(String(warn.servers)).toContain(nats.url);
    expect(svc.logs().some((l) => l.msg === "connected to NATS")).toBe(false);
  });

  it("mutual TLS (NATS_TLS_CA + NATS_TLS_CERT/KEY): relays a file; a client certificate from another CA is refused", async () => {
    await using nats = await startNats({
      config: `tls { cert_file: "${pki.serverCert}", key_file: "${pki.serverKey}", ca_file: "${pki.caCert}", verify: true }`,
    });
    const keyText = (await readFile(pki.clientKey, "utf8")).split("\n")[1] ?? "";
    await relayOne(nats, {
      method: "mutual tls",
      env: { NATS_TLS_CA: pki.caCert, NATS_TLS_CERT: pki.clientCert, NATS_TLS_KEY: pki.clientKey },
      secrets: [keyText],
    });
    await using svc = startService("consumer", {
      NATS_URL: nats.url,
      NATS_TLS_CA: pki.caCert,
      NATS_TLS_CERT: pki.strangerCert,
      NATS_TLS_KEY: pki.strangerKey,
      INPUT_DIR: root,
      SOURCE: "auth",
    });
    const refused = await svc.waitForLog(
      (l) => l.msg === "NATS not reachable yet, retrying",
      30_000,
      "a refused client certificate",
    );
    expect(String(refused.servers)).toContain(nats.url);
    expect(svc.logs().some((l) => l.msg === "connected to NATS")).toBe(false);
  });
});

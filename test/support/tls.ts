import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** PEM files of a throwaway private CA, a server certificate for 127.0.0.1/localhost, and a client certificate. */
export interface TestPki extends AsyncDisposable {
  dir: string;
  caCert: string;
  caKey: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A second, unrelated CA: a certificate it signed must be refused. */
  otherCaCert: string;
  /** A client certificate signed by the unrelated CA. */
  strangerCert: string;
  strangerKey: string;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  await run("openssl", args, { cwd });
}

async function makeCa(dir: string, name: string): Promise<{ cert: string; key: string }> {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.pem`);
  await openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key], dir);
  await openssl(
    ["req", "-x509", "-new", "-key", key, "-sha256", "-days", "2", "-subj", `/CN=${name}`, "-out", cert],
    dir,
  );
  return { cert, key };
}

async function makeLeaf(
  dir: string,
  name: string,
  ca: { cert: string; key: string },
  ext: string,
): Promise<{ cert: string; key: string }> {
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const cert = join(dir, `${name}.pem`);
  const extFile = join(dir, `${name}.ext`);
  await writeFile(extFile, ext);
  await openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key], dir);
  await openssl(["req", "-new", "-key", key, "-subj", `/CN=${name}`, "-out", csr], dir);
  await openssl(
    [
      "x509",
      "-req",
      "-in",
      csr,
      "-CA",
      ca.cert,
      "-CAkey",
      ca.key,
      "-CAcreateserial",
      "-days",
      "2",
      "-sha256",
      "-extfile",
      extFile,
      "-out",
      cert,
    ],
    dir,
  );
  return { cert, key };
}

/**
 * Generates a private CA with openssl (EC P-256, valid 2 days), a server
 * certificate with SANs 127.0.0.1 and localhost, a client certificate for
 * mutual TLS, and a stranger client certificate from another CA.
 */
export async function makeTestPki(): Promise<TestPki> {
  const dir = await mkdtemp(join(tmpdir(), "filerelay-pki-"));
  const ca = await makeCa(dir, "filerelay-test-ca");
  const other = await makeCa(dir, "other-ca");
  const server = await makeLeaf(
    dir,
    "server",
    ca,
    "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
  );
  const clientExt = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n";
  const client = await makeLeaf(dir, "client", ca, clientExt);
  const stranger = await makeLeaf(dir, "stranger", other, clientExt);
  return {
    dir,
    caCert: ca.cert,
    caKey: ca.key,
    serverCert: server.cert,
    serverKey: server.key,
    clientCert: client.cert,
    clientKey: client.key,
    otherCaCert: other.cert,
    strangerCert: stranger.cert,
    strangerKey: stranger.key,
    [Symbol.asyncDispose]: () => rm(dir, { recursive: true, force: true }),
  };
}

import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@filerelay/core";

/** What is remembered about a published file version (the KV value). */
export interface PublishedRecord {
  id: string;
  path: string;
  size: number;
  sha256: string;
  publishedAt: string;
}

/** A record found in the bucket, with when it was last written (the broker's clock). */
export interface FoundRecord extends PublishedRecord {
  recordedAtMs: number;
}

/**
 * Fingerprints of published file versions in the fingerprint KV bucket: a
 * restart, or another replica, does not publish the same version twice.
 * Records expire with the bucket's max age (FINGERPRINT_TTL_MS): a consumer
 * that leaves files in place refreshes the records of the files still there.
 */
export class FingerprintStore {
  readonly #kv: KV;
  /** The bucket's max age in ms (0: records never expire). */
  readonly ttlMs: number;

  private constructor(kv: KV, ttlMs: number) {
    this.#kv = kv;
    this.ttlMs = ttlMs;
  }

  static async open(nc: NatsConnection, bucket: string): Promise<FingerprintStore> {
    const kv = await new Kvm(nc).open(bucket, { allow_direct: true });
    const status = await kv.status();
    return new FingerprintStore(kv, status.ttl);
  }

  /** The record of a published version, or null. */
  async lookup(fingerprint: string): Promise<FoundRecord | null> {
    const entry = await this.#kv.get(fingerprint);
    if (!entry || entry.operation !== "PUT") return null;
    const recordedAtMs = entry.created.getTime();
    try {
      return { ...entry.json<PublishedRecord>(), recordedAtMs };
    } catch {
      // Written by something else: still proof that the version was published.
      return { id: "", path: "", size: 0, sha256: "", publishedAt: "", recordedAtMs };
    }
  }

  /** Records a version as published (called only after its PubAck). */
  async record(fingerprint: string, record: PublishedRecord): Promise<void> {
    await this.#kv.put(fingerprint, JSON.stringify(record));
  }

  /** Writes a record again so that its max age starts anew; false when it is gone already. */
  async refresh(fingerprint: string): Promise<boolean> {
    const entry = await this.#kv.get(fingerprint);
    if (!entry || entry.operation !== "PUT") return false;
    await this.#kv.put(fingerprint, entry.value);
    return true;
  }

  /** Forgets a version whose file is gone (it can never be seen again: a new file has a new inode or ctime). */
  async forget(fingerprint: string): Promise<void> {
    await this.#kv.purge(fingerprint);
  }
}

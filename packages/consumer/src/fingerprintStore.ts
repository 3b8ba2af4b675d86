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

/**
 * Fingerprints of published file versions in the fingerprint KV bucket: a
 * restart, or another replica, does not publish the same version twice.
 */
export class FingerprintStore {
  readonly #kv: KV;

  private constructor(kv: KV) {
    this.#kv = kv;
  }

  static async open(nc: NatsConnection, bucket: string): Promise<FingerprintStore> {
    return new FingerprintStore(await new Kvm(nc).open(bucket, { allow_direct: true }));
  }

  /** The record of a published version, or null. */
  async lookup(fingerprint: string): Promise<PublishedRecord | null> {
    const entry = await this.#kv.get(fingerprint);
    if (!entry || entry.operation !== "PUT") return null;
    try {
      return entry.json<PublishedRecord>();
    } catch {
      // Written by something else: still proof that the version was published.
      return { id: "", path: "", size: 0, sha256: "", publishedAt: "" };
    }
  }

  /** Records a version as published (called only after its PubAck). */
  async record(fingerprint: string, record: PublishedRecord): Promise<void> {
    await this.#kv.put(fingerprint, JSON.stringify(record));
  }
}

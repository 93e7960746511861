import type { JetStreamManager } from "@nats-io/jetstream";
import type { KV, KvEntry } from "@nats-io/kv";

/**
 * Every live entry of a KV bucket, by plain requests: the bucket stream's info lists its
 * subjects, then one get per key, in parallel. Not `kv.keys()`: that runs an ordered consumer
 * and waits for a message whose pending count is 0, which NATS 2.9.10 can miscount by one; under
 * load the listing then never ended, and the placement round that awaited it hung for good (no
 * failover, no rebalance, no graceful stop). Every call here has the client's request timeout.
 */
export async function listEntries(jsm: JetStreamManager, kv: KV, bucket: string): Promise<KvEntry[]> {
  const prefix = `$KV.${bucket}.`;
  const info = await jsm.streams.info(`KV_${bucket}`, { subjects_filter: `${prefix}>` });
  const keys = Object.keys(info.state.subjects ?? {}).map((subject) => subject.slice(prefix.length));
  const entries = await Promise.all(keys.map((key) => kv.get(key)));
  return entries.filter((e): e is KvEntry => e?.operation === "PUT").sort((a, b) => a.key.localeCompare(b.key));
}

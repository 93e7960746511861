import { KvWatchInclude, type KV, type KvEntry } from "@nats-io/kv";

/**
 * Calls `onChange` with every value in the bucket: once with what is stored, then after every
 * change. `decode` may return undefined to skip an entry it cannot read (it reports that itself).
 * Resolves once the first call has happened; returns the stop.
 *
 * What is stored comes from `list` (plain requests), not from the watch's replay: the replay ends
 * at the entry whose pending count is 0, and NATS 2.9.10 can miscount that by one, so a watch
 * started under load might never say it is ready. The watch, started first, brings only updates;
 * an update already reflected in the listing (same or older revision) is skipped.
 */
export async function watchBucket<T>(
  kv: KV,
  list: () => Promise<KvEntry[]>,
  decode: (entry: KvEntry) => T | undefined,
  onChange: (values: T[]) => void,
): Promise<() => void> {
  const current = new Map<string, { revision: number; value: T }>();
  const apply = (entry: KvEntry): boolean => {
    if ((current.get(entry.key)?.revision ?? 0) >= entry.revision) return false;
    const value = entry.operation === "PUT" ? decode(entry) : undefined;
    if (value !== undefined) current.set(entry.key, { revision: entry.revision, value });
    else current.delete(entry.key);
    return true;
  };
  const values = () => [...current.values()].map((v) => v.value);
  const watcher = await kv.watch({ include: KvWatchInclude.UpdatesOnly });
  const early: KvEntry[] = [];
  let listed = false;
  void (async () => {
    for await (const entry of watcher) {
      if (!listed) early.push(entry);
      else if (apply(entry)) onChange(values());
    }
  })();
  try {
    for (const entry of await list()) apply(entry);
  } catch (e) {
    watcher.stop();
    throw e;
  }
  for (const entry of early) apply(entry);
  listed = true;
  onChange(values());
  return () => watcher.stop();
}

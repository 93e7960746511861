import type { KV, KvEntry } from "@nats-io/kv";

/**
 * Calls `onChange` with every value in the bucket: once with what is stored (after the watch has
 * replayed it), then after every change. `decode` may return undefined to skip an entry it cannot
 * read (it reports that itself). Resolves once the first call has happened; returns the stop.
 */
export async function watchBucket<T>(kv: KV, decode: (entry: KvEntry) => T | undefined, onChange: (values: T[]) => void): Promise<() => void> {
  const current = new Map<string, T>();
  // With nothing stored the watch brings only future changes; otherwise it first replays the
  // stored values, the last of them with delta 0.
  let live = (await kv.status()).values === 0;
  if (live) onChange([]);
  const watcher = await kv.watch();
  await new Promise<void>((ready) => {
    if (live) ready();
    void (async () => {
      for await (const entry of watcher) {
        const value = entry.operation === "PUT" ? decode(entry) : undefined;
        if (value !== undefined) current.set(entry.key, value);
        else current.delete(entry.key);
        if (live || entry.delta === 0) {
          live = true;
          onChange([...current.values()]);
          ready();
        }
      }
    })();
  });
  return () => watcher.stop();
}

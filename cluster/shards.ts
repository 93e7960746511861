/** FNV-1a, 32 bits: cheap, stable across processes and versions, good enough spread for shard choice. */
export function fnv1a32(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

/** The shard an actor key belongs to. The shard count is fixed for the life of a cluster. */
export function shardOf(key: string, shardCount: number): number {
  return fnv1a32(key) % shardCount;
}

/**
 * What placement hands out to nodes: actor shards, event partitions (their routers) and the one
 * filer of stray telemetry. Unit names are ownership-table keys.
 */
export type Unit = { kind: "shard"; id: number } | { kind: "partition"; id: number } | { kind: "strays"; id: 0 };

export const units = {
  shard: (id: number) => `shard.${id}`,
  partition: (id: number) => `partition.${id}`,
  strays: "strays",
  all(shards: number, partitions: number): string[] {
    return [
      ...Array.from({ length: shards }, (_, i) => units.shard(i)),
      ...Array.from({ length: partitions }, (_, i) => units.partition(i)),
      units.strays,
    ];
  },
};

export function unitOf(name: string): Unit {
  const [kind, id] = name.split(".");
  if (kind === "shard" || kind === "partition") return { kind, id: Number(id) };
  if (name === units.strays) return { kind: "strays", id: 0 };
  throw new Error(`unknown unit "${name}"`);
}

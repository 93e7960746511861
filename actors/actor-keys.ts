import { shardOf } from "../cluster/shards.js";

/**
 * A window actor's key: `metric\twindow\tstart\tdimsJSON`. Unambiguous for any dimension values
 * (metric names and window ids hold no tab, and JSON escapes one inside a string).
 */
export function actorKey(metric: string, window: string, start: number, dimsId: string): string {
  return `${metric}\t${window}\t${start}\t${dimsId}`;
}

export interface ActorKeyParts {
  metric: string;
  window: string;
  start: number;
  /** The JSON array of the series' dimension values, in the rule's `groupBy` order. */
  dimsId: string;
  /** A salted sub-window of a hot series: which of its sub-actors (README, "Hot keys"). */
  salt?: number;
}

export function parseActorKey(key: string): ActorKeyParts {
  const a = key.indexOf("\t");
  const b = key.indexOf("\t", a + 1);
  const c = key.indexOf("\t", b + 1);
  if (a < 0 || b < 0 || c < 0) throw new Error(`not a window actor key: ${JSON.stringify(key)}`);
  // JSON escapes a tab inside a string, so a fourth tab can only start a salt.
  const d = key.indexOf("\t", c + 1);
  const parts: ActorKeyParts = { metric: key.slice(0, a), window: key.slice(a + 1, b), start: Number(key.slice(b + 1, c)), dimsId: key.slice(c + 1, d < 0 ? undefined : d) };
  if (d >= 0) parts.salt = Number(key.slice(d + 2));
  return parts;
}

/** A window actor key's start, without taking the rest apart (a window asks for it at every result). */
export function startOfKey(key: string): number {
  const a = key.indexOf("\t");
  const b = key.indexOf("\t", a + 1);
  return Number(key.slice(b + 1, key.indexOf("\t", b + 1)));
}

/** A salted sub-window key's salt, if it is one (JSON escapes a tab, so only a salt follows "\t#"). */
export function saltOfKey(key: string): number | undefined {
  const at = key.indexOf("\t#");
  return at < 0 ? undefined : Number(key.slice(at + 2));
}

/** The key of sub-actor `salt` of a hot series' window `key`. */
export function saltedKey(key: string, salt: number): string {
  return `${key}\t#${salt}`;
}

/** The window a salted sub-actor key belongs to (the key itself if not salted). */
export function unsaltedKey(key: string): string {
  const { metric, window, start, dimsId } = parseActorKey(key);
  return actorKey(metric, window, start, dimsId);
}

/**
 * What a window actor is sharded by: its series (metric and dimensions), not its window. Every
 * window of a series lives in one shard, so a minute can hand its state to its hour and day
 * (rollups) without leaving the shard, and a shard can count the series of a window it admits
 * (cardinality limits).
 */
export function seriesShardKey(key: string): string {
  const { metric, dimsId, salt } = parseActorKey(key);
  // A hot series' sub-actors live elsewhere than the series (and than each other, mostly).
  return salt === undefined ? `${metric}\t${dimsId}` : `${metric}\t${dimsId}\t#${salt}`;
}

/** The shard of a window actor key. */
export function shardOfKey(key: string, shardCount: number): number {
  return shardOf(seriesShardKey(key), shardCount);
}

import type { WindowResult } from "../actors/window-result.js";
import type { StateStore } from "../runtime/state-store.js";

export interface ResultQuery {
  metric: string;
  window: string;
  /** Window starts in [from, to). */
  from: number;
  to: number;
  /** Only series whose dimensions have these values. */
  where: Record<string, string>;
}

/**
 * A shard epoch seen on the results stream without a result to store with it (a batch of
 * provisional results, which are not stored): it fences older epochs all the same.
 */
export interface EpochSeen {
  seen: "epoch";
  shard: number;
  epoch: number;
}

/**
 * `duplicate`: the store already holds this window at this same final or corrected revision (a
 * re-publish: a shard replaying after a recovery). Not stored again and not news for subscribers:
 * since finals travel in batches (README, "Results") JetStream's de-duplication by message id no
 * longer catches a re-emitted result, so the store does.
 */
export type PutOutcome = "stored" | "older" | "duplicate" | "stale";

/**
 * The latest result of every window this node has seen on the results stream, in RocksDB.
 * Idempotent by (window key, revision): a result never replaces a higher revision, so replays
 * and duplicates are harmless. Every node keeps all of it, so any node answers for the cluster.
 */
export class ResultsStore {
  /** Per shard, the newest ownership epoch seen on the results stream. */
  private readonly epochs = new Map<number, number>();

  constructor(private readonly store: StateStore) {}

  /**
   * Stores `result` unless a newer one is already there, or it comes from a shard owner the
   * stream has already seen replaced (a stale epoch: a node that lost the shard and has not
   * noticed yet). True if stored.
   */
  async put(result: WindowResult): Promise<boolean> {
    return (await this.putAll([result]))[0]!;
  }

  /**
   * `put` for a batch in stream order, with one read per distinct window (one read batch) and one
   * write: the same outcome, result by result, as putting them one after another (a node with
   * many active windows stored results one read and one write at a time, ~10k a second, and its
   * results consumer fell behind). Returns, per result, whether it was stored. An `EpochSeen`
   * among them only moves its shard's epoch (fencing what follows it), and is never "stored".
   */
  async putAll(results: readonly (WindowResult | EpochSeen)[]): Promise<boolean[]> {
    return (await this.putAllDetailed(results)).map((outcome) => outcome === "stored");
  }

  /**
   * `putAll`, saying why a result was not stored: `older` (the store holds this window at a
   * newer revision, or is given a provisional result of a window it has at that revision),
   * `duplicate` (the same final or corrected revision again: the first one stays, as JetStream's
   * de-duplication kept the first) or `stale` (from a shard epoch older than one seen before it;
   * an `EpochSeen` is always `stale`).
   *
   * `texts[i]`, if given, is result i's JSON exactly as it came (the bytes of its message,
   * `resultTexts`): stored as is, rather than stringified again (with 1M windows closing at once,
   * stringifying every final anew was a fifth of what storing it cost).
   */
  async putAllDetailed(results: readonly (WindowResult | EpochSeen)[], texts?: readonly (Uint8Array | undefined)[]): Promise<PutOutcome[]> {
    const writes = new Map<string, Uint8Array>();
    const fresh: (string | undefined)[] = [];
    for (const result of results) {
      if ("seen" in result) {
        const newest = await this.newestEpoch(result.shard);
        if (result.epoch > newest) {
          this.epochs.set(result.shard, result.epoch);
          writes.set(epochKey(result.shard), Buffer.from(String(result.epoch)));
        }
        fresh.push(undefined);
        continue;
      }
      if (result.shard !== undefined && result.epoch !== undefined) {
        // Known after the first result of a shard: no await (a microtask) per result.
        const newest = this.epochs.get(result.shard) ?? (await this.newestEpoch(result.shard));
        if (result.epoch < newest) {
          fresh.push(undefined);
          continue;
        }
        if (result.epoch > newest) {
          this.epochs.set(result.shard, result.epoch);
          writes.set(epochKey(result.shard), Buffer.from(String(result.epoch)));
        }
      }
      fresh.push(storageKey(result.metric, result.window, result.start, JSON.stringify(result.dims)));
    }
    const keys = [...new Set(fresh.filter((k): k is string => k !== undefined))];
    const stored = await this.store.getMany(keys);
    const latest = new Map<string, WindowResult | undefined>(
      keys.map((key, i) => [key, stored[i] ? (JSON.parse(Buffer.from(stored[i]!).toString()) as WindowResult) : undefined]),
    );
    const outcome = results.map((result, i): PutOutcome => {
      const key = fresh[i];
      if (key === undefined || "seen" in result) return "stale";
      const current = latest.get(key);
      if (current && isNewer(current, result)) return "older";
      if (current && result.revision > 0 && current.revision === result.revision) return "duplicate";
      latest.set(key, result);
      writes.set(key, texts?.[i] ?? Buffer.from(JSON.stringify(result)));
      return "stored";
    });
    if (writes.size > 0) await this.store.write([...writes]);
    return outcome;
  }

  private async newestEpoch(shard: number): Promise<number> {
    let epoch = this.epochs.get(shard);
    if (epoch === undefined) {
      const stored = await this.store.get(epochKey(shard));
      epoch = stored ? Number(Buffer.from(stored).toString()) : 0;
      this.epochs.set(shard, epoch);
    }
    return epoch;
  }

  /** Per shard, the newest epoch seen on the results stream so far (as stored). */
  async storedEpochs(): Promise<Map<number, number>> {
    const out = new Map<number, number>();
    for await (const [key, value] of this.store.scan("result-epoch/", "result-epoch0")) {
      out.set(Number(key.slice("result-epoch/".length)), Number(Buffer.from(value).toString()));
    }
    return out;
  }

  async query(q: ResultQuery): Promise<WindowResult[]> {
    const prefix = `result/${q.metric}/${q.window}/`;
    const out: WindowResult[] = [];
    for await (const [, value] of this.store.scan(prefix + pad(Math.max(0, q.from)), prefix + pad(Math.max(0, q.to)))) {
      const result = JSON.parse(Buffer.from(value).toString()) as WindowResult;
      if (matchesWhere(result.dims, q.where)) out.push(result);
    }
    return out;
  }
}

/** Forgets the windows of `metric`/`window` that start before `cutoff` (retention). */
export async function dropResultsBefore(store: StateStore, metric: string, window: string, cutoff: number): Promise<void> {
  const prefix = `result/${metric}/${window}/`;
  await store.deleteRange(prefix, prefix + pad(Math.max(0, cutoff)));
}

/**
 * Revisions order final and corrected results; provisional ones (all revision 0) only grow, so
 * the one with more events is the later. A redelivered older result never replaces a newer one.
 */
export function isNewer(a: WindowResult, b: WindowResult): boolean {
  return a.revision > b.revision || (a.revision === b.revision && a.revision === 0 && a.eventCount > b.eventCount);
}

function epochKey(shard: number): string {
  return `result-epoch/${shard}`;
}

export function matchesWhere(dims: Record<string, string>, where: Record<string, string>): boolean {
  for (const k in where) if (dims[k] !== where[k]) return false;
  return true;
}

function storageKey(metric: string, window: string, start: number, dimsId: string): string {
  return `result/${metric}/${window}/${pad(start)}/${dimsId}`;
}

/** Fixed-width start times sort in time order as strings (good until the year 5138). */
function pad(ms: number): string {
  return String(Math.floor(ms)).padStart(14, "0");
}

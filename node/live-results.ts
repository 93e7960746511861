import type { WindowResult } from "../actors/window-result.js";
import { isNewer, matchesWhere, type ResultQuery } from "./results-store.js";

export interface LiveResultsOptions {
  /** Event time at which a window is due to go final (end + its rule's lateness), if known. */
  closesAt(result: WindowResult): number;
  /**
   * A provisional entry whose window closed this long (event time) before the newest watermark
   * seen is dropped even without its final (a window that waited for sub-actors or finer windows
   * stays provisional after `closesAt` for a while, so not at once).
   */
  staleAfterMs: number;
  /** At most this many provisional entries; past it, the oldest are dropped. */
  maxWindows: number;
  /** A stored final is remembered (key only) at least this long, at most twice as long (ms of wall time). */
  finalMemoryMs: number;
}

export const liveResultsDefaults = { staleAfterMs: 5 * 60_000, maxWindows: 1_000_000, finalMemoryMs: 60_000 };

/**
 * The provisional (revision 0) results of open windows, newest per window, in memory only: what
 * queries merge with the stored finals and what WebSocket subscribers get the moment a batch
 * arrives from NATS. Never written to RocksDB: a provisional result is superseded within an
 * emit interval, so storing it (a read and a write per window change, on every node) was all
 * cost and no durability anyone relies on.
 *
 * An entry leaves when its window's final (or correction) is stored (`settle`), when the
 * watermark passes its window's close by `staleAfterMs` (a window whose final never came:
 * its rule was removed, its series folded), or, past `maxWindows`, oldest first.
 *
 * Fencing, as in the results store: a provisional result from a shard epoch older than one
 * already seen for that shard is refused. A provisional result of a window whose final was
 * stored within `finalMemoryMs` is refused too: a shard that recovers replays its mailbox from
 * its last checkpoint and may emit an old provisional result again after the final, which a
 * subscriber must never see.
 */
export class LiveResults {
  /** Per `metric\twindow`, the entries by window key (insertion order: first seen first). */
  private readonly bySeries = new Map<string, Map<string, WindowResult>>();
  /** Keys of windows whose final was stored recently: two generations, rotated every `finalMemoryMs`. */
  private finals = new Set<string>();
  private olderFinals = new Set<string>();
  private rotatedAt: number;
  private readonly epochs = new Map<number, number>();
  private newestWatermark = -Infinity;
  private count = 0;
  private lastSeries = { metric: "", window: "", id: "" };
  /** Provisional results taken and refused so far (status, tests). */
  taken = 0;
  refused = 0;

  constructor(
    private readonly options: LiveResultsOptions,
    now = Date.now(),
  ) {
    this.rotatedAt = now;
  }

  /** Provisional entries held. */
  get size(): number {
    return this.count;
  }

  /** Finals remembered (keys). */
  get rememberedFinals(): number {
    return this.finals.size + this.olderFinals.size;
  }

  /** The newest epoch known for a shard (from the results store at start, from results since). */
  noteEpoch(shard: number, epoch: number): void {
    if (epoch > (this.epochs.get(shard) ?? 0)) this.epochs.set(shard, epoch);
  }

  /**
   * A provisional result from the results subjects. True if it is now its window's newest (and
   * so news for subscribers); false if refused: stale epoch, older than the one held, its
   * window's final already stored, or its window closed long ago (`staleAfterMs`: a node
   * replaying the results stream from its start).
   */
  offer(result: WindowResult): boolean {
    if (
      result.status !== "provisional" ||
      !this.fresh(result) ||
      this.finals.has(result.key) ||
      this.olderFinals.has(result.key) ||
      this.options.closesAt(result) < this.newestWatermark - this.options.staleAfterMs
    ) {
      this.refused++;
      return false;
    }
    const id = seriesId(result.metric, result.window);
    let entries = this.bySeries.get(id);
    if (!entries) this.bySeries.set(id, (entries = new Map()));
    const current = entries.get(result.key);
    if (current && isNewer(current, result)) {
      this.refused++;
      return false;
    }
    if (!current) {
      this.count++;
      if (this.count > this.options.maxWindows) this.dropOldest();
    }
    entries.set(result.key, result);
    if (result.watermark > this.newestWatermark) this.newestWatermark = result.watermark;
    this.taken++;
    return true;
  }

  /**
   * A provisional result read back from the results stream at start (`live-warmup.ts`): as
   * `offer`, except that the entry held wins a tie. It was heard live since, so it is at least
   * as recent; and a tie is the same count, so the same value, perhaps under an older watermark.
   */
  warm(result: WindowResult): boolean {
    const held = this.bySeries.get(seriesId(result.metric, result.window))?.get(result.key);
    if (held && !isNewer(result, held)) {
      this.refused++;
      return false;
    }
    return this.offer(result);
  }

  /**
   * A final or corrected result went through the results store (stored, or refused as older
   * than what it holds): the window's provisional entry is done, and a provisional result of it
   * arriving from now on is stale.
   */
  settle(result: WindowResult, now = Date.now()): void {
    if (result.shard !== undefined && result.epoch !== undefined) this.noteEpoch(result.shard, result.epoch);
    if (result.watermark > this.newestWatermark) this.newestWatermark = result.watermark;
    const entries = this.bySeries.get(this.seriesIdOf(result));
    if (entries?.delete(result.key)) this.count--;
    this.rotate(now);
    this.finals.add(result.key);
  }

  /** The entries a query asks for. */
  query(q: ResultQuery): WindowResult[] {
    const entries = this.bySeries.get(seriesId(q.metric, q.window));
    if (!entries) return [];
    const out: WindowResult[] = [];
    for (const r of entries.values()) if (r.start >= q.from && r.start < q.to && matchesWhere(r.dims, q.where)) out.push(r);
    return out;
  }

  /**
   * `stored` (the results store's answer to `q`, in its order) with the provisional entries of
   * `q` merged in, and `held` (open windows that this node's shards answer for themselves, not
   * kept here): a window's newer result wins, by the store's own rule (higher revision; among
   * provisional ones, more events). Ordered by window start, then dimensions, like the store.
   */
  merge(stored: WindowResult[], q: ResultQuery, held: WindowResult[] = []): WindowResult[] {
    const live = this.query(q);
    if (live.length === 0 && held.length === 0) return stored;
    const byKey = new Map<string, WindowResult>();
    for (const r of stored) byKey.set(r.key, r);
    for (const r of live.concat(held)) {
      const current = byKey.get(r.key);
      if (!current || !isNewer(current, r)) byKey.set(r.key, r);
    }
    const dimsIds = new Map<WindowResult, string>();
    const dimsId = (r: WindowResult) => {
      let id = dimsIds.get(r);
      if (id === undefined) dimsIds.set(r, (id = JSON.stringify(r.dims)));
      return id;
    };
    return [...byKey.values()].sort((a, b) => a.start - b.start || (dimsId(a) < dimsId(b) ? -1 : dimsId(a) > dimsId(b) ? 1 : 0));
  }

  /** Drops provisional entries of windows long closed (see `staleAfterMs`) and forgets old finals. */
  sweep(now = Date.now()): number {
    this.rotate(now);
    const horizon = this.newestWatermark - this.options.staleAfterMs;
    let dropped = 0;
    for (const [id, entries] of this.bySeries) {
      for (const [key, r] of entries) {
        if (this.options.closesAt(r) < horizon) {
          entries.delete(key);
          dropped++;
        }
      }
      if (entries.size === 0) this.bySeries.delete(id);
    }
    this.count -= dropped;
    return dropped;
  }

  /** Forgets the windows of `metric`/`window` that start before `cutoff` (retention). */
  dropBefore(metric: string, window: string, cutoff: number): void {
    const entries = this.bySeries.get(seriesId(metric, window));
    if (!entries) return;
    for (const [key, r] of entries) {
      if (r.start < cutoff) {
        entries.delete(key);
        this.count--;
      }
    }
  }

  /**
   * `seriesId` of a result, made once for a run of results of one series (a minute's close
   * settles a million finals of one metric and window; a new id string was a new hash each).
   */
  private seriesIdOf(result: WindowResult): string {
    if (result.metric !== this.lastSeries.metric || result.window !== this.lastSeries.window) {
      this.lastSeries = { metric: result.metric, window: result.window, id: seriesId(result.metric, result.window) };
    }
    return this.lastSeries.id;
  }

  private fresh(result: WindowResult): boolean {
    if (result.shard === undefined || result.epoch === undefined) return true;
    const newest = this.epochs.get(result.shard) ?? 0;
    if (result.epoch < newest) return false;
    if (result.epoch > newest) this.epochs.set(result.shard, result.epoch);
    return true;
  }

  private rotate(now: number): void {
    if (now - this.rotatedAt < this.options.finalMemoryMs) return;
    this.olderFinals = this.finals;
    this.finals = new Set();
    this.rotatedAt = now;
  }

  /** Past `maxWindows`: drops the first-seen entry (of the series holding the most). */
  private dropOldest(): void {
    let largest: Map<string, WindowResult> | undefined;
    for (const entries of this.bySeries.values()) if (!largest || entries.size > largest.size) largest = entries;
    const first = largest?.keys().next();
    if (first && !first.done) {
      largest!.delete(first.value);
      this.count--;
    }
  }
}

function seriesId(metric: string, window: string): string {
  return `${metric}\t${window}`;
}

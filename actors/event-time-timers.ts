/**
 * Keys in buckets by event time, the times kept sorted: `due(watermark)` hands over, oldest
 * first, every key whose time the watermark reached. The bucket is a set (`EventTimeTimers`) or
 * a list (`EventTimeList`).
 */
abstract class TimeBuckets<Bucket extends Iterable<string>> {
  protected readonly byTime = new Map<number, Bucket>();
  private times: number[] = [];

  /** The bucket of `time`, made (and its time placed in order) if there is none yet. */
  protected bucket(time: number, make: () => Bucket): Bucket {
    let keys = this.byTime.get(time);
    if (!keys) {
      keys = make();
      this.byTime.set(time, keys);
      this.times.splice(sortedIndex(this.times, time), 0, time);
    }
    return keys;
  }

  *due(watermark: number): Iterable<string> {
    while (this.times.length > 0 && this.times[0]! <= watermark) {
      const time = this.times.shift()!;
      const keys = this.byTime.get(time)!;
      this.byTime.delete(time);
      this.handedOver(keys);
      yield* keys;
    }
  }

  /** A bucket leaves (`due`). */
  protected handedOver(_keys: Bucket): void {}
}

/** Keys due at event times (see `TimeBuckets`). Registering a key twice for one time is harmless. */
export class EventTimeTimers extends TimeBuckets<Set<string>> {
  /** Registers `key` at `time`; false if it already was. */
  add(time: number, key: string): boolean {
    const keys = this.bucket(time, () => new Set());
    // One hash operation, not two (`has`, then `add`): a minute's close adds a million purge timers.
    const before = keys.size;
    keys.add(key);
    return keys.size !== before;
  }

  has(time: number, key: string): boolean {
    return this.byTime.get(time)?.has(key) ?? false;
  }

  get size(): number {
    let n = 0;
    for (const keys of this.byTime.values()) n += keys.size;
    return n;
  }
}

/**
 * `EventTimeTimers` for keys registered once each (a caller that knows a key is new): a list per
 * time, not a set. Why: a window table's rows register their close once, and a million rows
 * open a minute; a set entry cost ~40 bytes a row, a list slot 8.
 */
export class EventTimeList extends TimeBuckets<string[]> {
  private count = 0;

  add(time: number, key: string): void {
    this.bucket(time, () => []).push(key);
    this.count++;
  }

  protected override handedOver(keys: string[]): void {
    this.count -= keys.length;
  }

  get size(): number {
    return this.count;
  }
}

function sortedIndex(sorted: number[], value: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

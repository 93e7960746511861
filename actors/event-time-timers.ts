/**
 * Keys due at event times: `due(watermark)` hands over, oldest first, every key whose time the
 * watermark reached. Registering a key twice for one time is harmless.
 */
export class EventTimeTimers {
  private readonly byTime = new Map<number, Set<string>>();
  private times: number[] = [];

  /** Registers `key` at `time`; false if it already was. */
  add(time: number, key: string): boolean {
    let keys = this.byTime.get(time);
    if (!keys) {
      keys = new Set();
      this.byTime.set(time, keys);
      this.times.splice(sortedIndex(this.times, time), 0, time);
    }
    // One hash operation, not two (`has`, then `add`): a minute's close adds a million purge timers.
    const before = keys.size;
    keys.add(key);
    return keys.size !== before;
  }

  has(time: number, key: string): boolean {
    return this.byTime.get(time)?.has(key) ?? false;
  }

  *due(watermark: number): Iterable<string> {
    while (this.times.length > 0 && this.times[0]! <= watermark) {
      const time = this.times.shift()!;
      const keys = this.byTime.get(time)!;
      this.byTime.delete(time);
      yield* keys;
    }
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
export class EventTimeList {
  private readonly byTime = new Map<number, string[]>();
  private times: number[] = [];
  private count = 0;

  add(time: number, key: string): void {
    let keys = this.byTime.get(time);
    if (!keys) {
      keys = [];
      this.byTime.set(time, keys);
      this.times.splice(sortedIndex(this.times, time), 0, time);
    }
    keys.push(key);
    this.count++;
  }

  *due(watermark: number): Iterable<string> {
    while (this.times.length > 0 && this.times[0]! <= watermark) {
      const time = this.times.shift()!;
      const keys = this.byTime.get(time)!;
      this.byTime.delete(time);
      this.count -= keys.length;
      yield* keys;
    }
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

import { idFingerprint } from "./id-fingerprint.js";

/**
 * Event ids seen within a horizon of arrival time, to count a re-published event once.
 *
 * Why not a `Set` of strings: at a million events per second a 10-minute horizon is 600M ids.
 * A Set costs ~90 bytes per id (string included), caps at 2^24 entries (V8 throws past it), and
 * its lookups and growth were the router's largest cost. Here each id is a 96-bit fingerprint in
 * one open-addressing table of typed arrays (16 bytes a slot, outside the JS heap), one probe
 * sequence per id. Two different ids share a fingerprint with probability ~n / 2^96 per lookup
 * (n ids remembered): for 600M ids, about one wrongly dropped event in 10^11 years of lookups at
 * that rate, far below the odds of a memory bit flip; README, "De-duplication horizon".
 *
 * Expiry is by generation (horizon / `generationCount` long): a slot carries the generation it
 * was written in, and a slot older than the horizon is free for reuse. Whole generations expire
 * at once; the table is rebuilt (live slots only) when written slots pass the load limit, so its
 * size follows the ids remembered, and the horizon is honoured to within one generation.
 *
 * The rebuild is incremental: the old table stays (read only) beside the new one, and every
 * insert moves the next few old slots over, so no single event pays for copying the whole table.
 * Done at once, it paused the node's event loop for 1–3 s in the hot-key bench: every router's
 * table (one per partition, all equally loaded) reached the load limit at the same moment.
 */
export class RecentIds {
  private slots: Slots;
  /** During a rebuild: the table being moved into `slots` (read only), and the next slot of it to move. */
  private old?: Slots;
  private moved = 0;
  /**
   * The last never-written slot of the old table moved past (-1: none yet). A probe sequence from
   * a slot at or before it ends before `moved`: its ids are in the new table, if live.
   */
  private lastEmpty = -1;
  /** Old slots moved per insert during the rebuild (see `rebuild`). */
  private step = 1;
  /** Slots ever written (live or expired) since the last rebuild: what lengthens probe sequences. */
  private written = 0;
  private generation = 1;
  private generationStart: number;
  private readonly generationMs: number;
  /** Live ids per generation, by generation % (generationCount + 1). */
  private readonly perGeneration: number[];

  constructor(
    readonly horizonMs: number,
    now: number,
    private readonly generationCount = 10,
  ) {
    this.generationMs = Math.max(1, Math.ceil(horizonMs / generationCount));
    this.generationStart = now;
    this.perGeneration = new Array(generationCount + 1).fill(0);
    this.slots = new Slots(minCapacity);
  }

  /** True if `id` was already seen within the horizon; records it otherwise. */
  seen(id: string, now: number): boolean {
    this.rotate(now);
    const f = idFingerprint(id);
    return !this.insert(f[0]!, f[1]!, f[2]!);
  }

  /** `seen` for the id whose fingerprint (`idFingerprint`) is words `3i…3i+2` of `fingerprints`. */
  seenFingerprint(fingerprints: Uint32Array, i: number, now: number): boolean {
    this.rotate(now);
    return !this.insert(fingerprints[3 * i]!, fingerprints[3 * i + 1]!, fingerprints[3 * i + 2]!);
  }

  /**
   * Reads the first slot of each fingerprint's probe sequence (rows `from…to-1`), so that the
   * `seenFingerprint` calls that follow find them in cache. Why: the table is far larger than
   * the caches, so a lookup is a cache miss, and a batch's misses here are independent: the CPU
   * overlaps them, where lookups one after another wait for each miss in turn.
   */
  prefetch(fingerprints: Uint32Array, from: number, to: number): void {
    const { words, mask } = this.slots;
    let touched = 0;
    for (let i = from; i < to; i++) touched ^= words[4 * (fingerprints[3 * i]! & mask)]!;
    // During a rebuild a lookup may read the table being moved too.
    if (this.old) {
      const old = this.old;
      for (let i = from; i < to; i++) touched ^= old.words[4 * (fingerprints[3 * i]! & old.mask)]!;
    }
    this.touched = touched;
  }

  /** Keeps `prefetch`'s reads from being optimized away. */
  private touched = 0;

  /** Remember ids recovered from a log (they count as seen now: kept for at least one more horizon). */
  restore(ids: Iterable<string>, now: number): void {
    this.rotate(now);
    for (const id of ids) {
      const f = idFingerprint(id);
      this.insert(f[0]!, f[1]!, f[2]!);
    }
  }

  /** `restore` of fingerprints, three words each. */
  restoreFingerprints(fingerprints: Uint32Array, now: number): void {
    this.rotate(now);
    for (let j = 0; j + 2 < fingerprints.length; j += 3) this.insert(fingerprints[j]!, fingerprints[j + 1]!, fingerprints[j + 2]!);
  }

  get size(): number {
    return this.perGeneration.reduce((a, b) => a + b, 0);
  }

  /** Bytes the table holds (typed arrays). */
  get bytes(): number {
    return this.slots.bytes + (this.old?.bytes ?? 0);
  }

  /** Records the fingerprint `a b c` unless it is live already; returns whether it was new. */
  private insert(a: number, b: number, c: number): boolean {
    const oldestLive = this.generation - this.generationCount;
    if (this.old) {
      // Live in the table being moved, and not moved yet: seen. Nothing is ever removed from it,
      // so its probe sequences stay whole.
      if ((a & this.old.mask) > this.lastEmpty && find(this.old, a, b, c, oldestLive)) return false;
      this.migrate(oldestLive);
    }
    const { words, mask } = this.slots;
    let reusable = -1;
    let i = a & mask;
    for (let g = words[4 * i]!; g !== 0; i = (i + 1) & mask, g = words[4 * i]!) {
      if (g < oldestLive) {
        if (reusable < 0) reusable = i;
      } else if (words[4 * i + 1] === a && words[4 * i + 2] === b && words[4 * i + 3] === c) return false;
    }
    // Not found up to the first never-written slot: an expired slot earlier on that path is as good.
    const slot = 4 * (reusable >= 0 ? reusable : i);
    if (reusable < 0) this.written++;
    words[slot] = this.generation;
    words[slot + 1] = a;
    words[slot + 2] = b;
    words[slot + 3] = c;
    this.perGeneration[this.generation % this.perGeneration.length]!++;
    if (this.written > this.slots.capacity * maxLoad) this.rebuild();
    return true;
  }

  /** Keeps at least `horizonMs` of ids: the current generation plus `generationCount` full ones. */
  private rotate(now: number): void {
    // Called per id with the same `now` for a whole batch: nothing to do until the next generation starts.
    if (now < this.generationStart + this.generationMs) return;
    const steps = Math.floor((now - this.generationStart) / this.generationMs);
    if (steps <= 0) return;
    for (let s = 1; s <= Math.min(steps, this.perGeneration.length); s++) this.perGeneration[(this.generation + s) % this.perGeneration.length] = 0;
    this.generation += steps;
    this.generationStart += steps * this.generationMs;
  }

  /**
   * Starts a table sized for the live ids (at most `targetLoad` full); `migrate` moves the live
   * slots of the current one into it, a few per insert, expired ones dropped.
   */
  private rebuild(): void {
    // A rebuild still under way: finish it first (`step` below makes that rare).
    if (this.old) this.migrate(this.generation - this.generationCount, Infinity);
    const live = this.size;
    let capacity = minCapacity;
    while (capacity * targetLoad < live + 1) capacity *= 2;
    // Spread the move over about half the inserts the new table takes before its own rebuild:
    // as thin as it can be (the work is the same, one random write per live slot and the new
    // table's first touch of its pages) and still over long before that.
    const room = Math.max(1, (maxLoad * capacity - live) / 2);
    this.step = Math.max(1, Math.ceil(this.slots.capacity / room));
    this.old = this.slots;
    this.moved = 0;
    this.lastEmpty = -1;
    this.slots = new Slots(capacity);
    this.written = 0;
  }

  /** Moves the next `step` slots of the old table (the live ones) into the current one. */
  private migrate(oldestLive: number, step = this.step): void {
    const old = this.old!;
    const { words, mask } = this.slots;
    const end = Math.min(old.capacity, this.moved + step);
    for (let j = 4 * this.moved; j < 4 * end; j += 4) {
      const generation = old.words[j]!;
      if (generation === 0) this.lastEmpty = j >> 2;
      // Never written (0: also below `oldestLive` once the first horizon has passed) or expired.
      if (generation === 0 || generation < oldestLive) continue;
      // Not in the new table already: an id live in the old one is never inserted anew.
      let i = old.words[j + 1]! & mask;
      while (words[4 * i] !== 0) i = (i + 1) & mask;
      for (let w = 0; w < 4; w++) words[4 * i + w] = old.words[j + w]!;
      this.written++;
    }
    this.moved = end;
    if (end === old.capacity) this.old = undefined;
  }
}

/** Whether the fingerprint `a, b, c` is live (written in a generation from `oldestLive` on) in `slots`. */
function find(slots: Slots, a: number, b: number, c: number, oldestLive: number): boolean {
  const { words, mask } = slots;
  for (let i = a & mask, g = words[4 * i]!; g !== 0; i = (i + 1) & mask, g = words[4 * i]!) {
    if (g >= oldestLive && words[4 * i + 1] === a && words[4 * i + 2] === b && words[4 * i + 3] === c) return true;
  }
  return false;
}

const minCapacity = 1 << 12;
/** Rebuild once this share of slots has been written (linear probing slows down past it). */
const maxLoad = 0.7;
/** A rebuilt table starts this full at most, so it takes a while to need the next rebuild. */
const targetLoad = 0.35;

/**
 * The table: per slot four words side by side (one cache line holds a probe step): the
 * generation it was written in (0: never written), then the three fingerprint words.
 */
class Slots {
  readonly words: Uint32Array;
  readonly mask: number;

  constructor(readonly capacity: number) {
    this.words = new Uint32Array(4 * capacity);
    this.mask = capacity - 1;
  }

  get bytes(): number {
    return this.capacity * 16;
  }
}

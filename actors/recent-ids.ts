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
 */
export class RecentIds {
  private slots: Slots;
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
    /** Written slots (as a share of capacity) at which the table is rebuilt: see `staggeredLoad`. */
    private readonly rebuildLoad = maxLoad,
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
    return this.slots.bytes;
  }

  /** Records the fingerprint `a b c` unless it is live already; returns whether it was new. */
  private insert(a: number, b: number, c: number): boolean {
    const { words, mask } = this.slots;
    const oldestLive = this.generation - this.generationCount;
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
    if (this.written > this.slots.capacity * this.rebuildLoad) this.rebuild();
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

  /** A table sized for the live ids (at most half full), expired slots dropped. */
  private rebuild(): void {
    const old = this.slots;
    const oldestLive = this.generation - this.generationCount;
    let capacity = minCapacity;
    while (capacity * targetLoad < this.size + 1) capacity *= 2;
    const next = new Slots(capacity);
    const { words, mask } = next;
    let written = 0;
    const from = old.words;
    for (let j = 0; j < from.length; j += 4) {
      const generation = from[j]!;
      // Never written (0: also below `oldestLive` once the first horizon has passed) or expired.
      if (generation === 0 || generation < oldestLive) continue;
      let i = from[j + 1]! & mask;
      while (words[4 * i] !== 0) i = (i + 1) & mask;
      words[4 * i] = generation;
      words[4 * i + 1] = from[j + 1]!;
      words[4 * i + 2] = from[j + 2]!;
      words[4 * i + 3] = from[j + 3]!;
      written++;
    }
    this.slots = next;
    this.written = written;
  }
}

const minCapacity = 1 << 12;
/** Rebuild once this share of slots has been written (linear probing slows down past it). */
const maxLoad = 0.7;

/**
 * A rebuild load for table `i` of several fed at the same rate (a node's partitions), between
 * 0.5 and 0.8, spread evenly (golden-ratio steps). Why: rebuilds are synchronous, and tables
 * fed alike reach one load together. Measured at 450k events/s over 24 partitions: all 24
 * rebuilt (100–300 ms each) within 6.5 s, a 5.5 s stall of the whole node, every provisional
 * result of that time seconds late. Spread, they fall over a third of the table's growth.
 */
export function staggeredLoad(i: number): number {
  return 0.5 + 0.3 * ((i * 0.6180339887) % 1);
}
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

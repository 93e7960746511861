import { idFingerprint } from "./id-fingerprint.js";

/**
 * Event ids seen within a horizon of arrival time, to count a re-published event once.
 *
 * Why not a `Set` of strings: at a million events per second a 10-minute horizon is 600M ids.
 * A Set costs ~90 bytes per id (string included), caps at 2^24 entries (V8 throws past it), and
 * its lookups and growth were the router's largest cost. Here each id is an 88-bit fingerprint in
 * one open-addressing table of typed arrays (12 bytes a slot, outside the JS heap), one probe
 * sequence per id. Two different ids share a fingerprint with probability ~n / 2^88 per lookup
 * (n ids remembered): for 600M ids at a million lookups a second, about one wrongly dropped event
 * in 16,000 years, far below the odds of a memory bit flip; README, "De-duplication horizon".
 *
 * Expiry is by generation (horizon / `generationCount` long): a slot carries a tag of the
 * generation it was written in (8 bits, where the 96-bit fingerprint's last 8 bits would be), and
 * a slot older than the horizon is free for reuse. Whole generations expire at once; the table is
 * rebuilt (live slots only) when written slots pass the load limit, so its size follows the ids
 * remembered, and the horizon is honoured to within one generation. Tags repeat every
 * `tagPeriod` generations, so no slot may live that long: see `refresh`.
 *
 * A rebuild is a migration, not a copy at once (which paused the router 30–270 ms per table in
 * the saturated robots bench, and the node for seconds when tables rebuilt together): the new
 * table starts empty beside the old one, and each insert (or `prefetch`, for its batch) moves the
 * next `step` old slots over, expired ones dropped, starting at a never-written slot and always
 * stopping just past one. So the moved part of the old table is whole probe clusters, and an id
 * lives in exactly one table: the old one if its home slot there is not moved yet (looked up and
 * recorded there; its probe sequence cannot reach the moved part except by wrapping round to the
 * start, which sends it to the new table), the new one otherwise. One probe sequence per id, as
 * without a migration. (An earlier incremental rebuild looked ids up in both tables and recorded
 * new ones in the new table only: a second cache miss per id, and it made the node fall behind.)
 */
export class RecentIds {
  private slots: Slots;
  /**
   * During a migration: the table being moved into `slots`, from its never-written slot
   * `oldStart` on (wrapping), `moved` slots so far. An id whose home slot in it is not moved yet
   * is looked up (and recorded) there; any other in `slots`: one probe sequence per id.
   */
  private old?: Slots;
  private oldStart = 0;
  private moved = 0;
  /** Old slots moved per insert (`migrationStep` at least). */
  private step = migrationStep;
  /** Inserts whose share of the migration `prefetch` moved already. */
  private prepaid = 0;
  /** Slots ever written (live or expired) since the last rebuild: what lengthens probe sequences. */
  private written = 0;
  private generation = 1;
  /** No slot in either table was written before this generation (see `refresh`). */
  private oldestStored = 1;
  /** `oldestStored` once the migration under way is done (its old table dropped). */
  private oldestAfterMigration = 1;
  /** Per tag (index), 1 if a slot with that tag is live now: the last `generationCount` + 1 generations. */
  private readonly liveTags = new Uint8Array(256);
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
    // Slots live at most ~refreshAge * 3/2 + 2 * generationCount generations (`refresh`): within `tagPeriod`.
    if (generationCount > 32) throw new Error("at most 32 generations per horizon");
    this.perGeneration = new Array(generationCount + 1).fill(0);
    this.slots = new Slots(minCapacity);
    this.markLiveTags();
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
    let touched = 0;
    if (this.old !== undefined && to > from) {
      // The batch's share of the migration, in one go (one loop, not one call per insert).
      this.migrate(this.step * (to - from));
      this.prepaid += to - from;
    }
    const old = this.old;
    const { words, mask } = this.slots;
    if (old === undefined) for (let i = from; i < to; i++) touched ^= words[3 * (fingerprints[3 * i]! & mask)]!;
    else {
      // The one table each id is looked up in (see `insert`).
      const { oldStart, moved } = this;
      for (let i = from; i < to; i++) {
        const a = fingerprints[3 * i]!;
        const h = a & old.mask;
        touched ^= ((h - oldStart) & old.mask) >= moved ? old.words[3 * h]! : words[3 * (a & mask)]!;
      }
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

  /** A migration is under way (tests, benches). */
  get migrating(): boolean {
    return this.old !== undefined;
  }

  /** Records the fingerprint `a b c` unless it is live already; returns whether it was new. */
  private insert(a: number, b: number, c: number): boolean {
    if (this.old !== undefined) {
      const found = this.insertOld(this.old, a, b, c);
      if (this.prepaid > 0) this.prepaid--;
      else this.migrate(this.step);
      if (found !== notThere) return found === recorded;
    }
    const { words, mask } = this.slots;
    const live = this.liveTags;
    let reusable = -1;
    let i = a & mask;
    for (let w = words[3 * i]!; w !== 0; i = (i + 1) & mask, w = words[3 * i]!) {
      if (live[w & tagMask] === 0) {
        if (reusable < 0) reusable = i;
      } else if (words[3 * i + 1] === a && words[3 * i + 2] === b && ((w ^ c) & ~tagMask) === 0) return false;
    }
    // Not found up to the first never-written slot: an expired slot earlier on that path is as good.
    const slot = 3 * (reusable >= 0 ? reusable : i);
    if (reusable < 0) this.written++;
    words[slot] = (c & ~tagMask) | tagOf(this.generation);
    words[slot + 1] = a;
    words[slot + 2] = b;
    this.perGeneration[this.generation % this.perGeneration.length]!++;
    if (this.written > this.slots.capacity * this.rebuildLoad) this.rebuild();
    return true;
  }

  /**
   * The id `a b c` looked up in the table being migrated, if its home slot there is not moved
   * yet: `seenBefore` (live there), `recorded` (absent: written there now) or `notThere` (its
   * home is moved, or its probe sequence runs into the moved part: the current table decides).
   * Why an id's slots stay in one table: the moved part ends just past a never-written slot, so
   * the probe sequence from an unmoved home stays in the unmoved part (up to `oldStart`, moved
   * first), and nothing is written into the moved part.
   */
  private insertOld(old: Slots, a: number, b: number, c: number): number {
    const { words, mask } = old;
    const live = this.liveTags;
    const start = this.oldStart;
    let i = a & mask;
    if (((i - start) & mask) < this.moved) return notThere;
    let reusable = -1;
    for (let w = words[3 * i]!; w !== 0; w = words[3 * i]!) {
      if (live[w & tagMask] === 0) {
        if (reusable < 0) reusable = i;
      } else if (words[3 * i + 1] === a && words[3 * i + 2] === b && ((w ^ c) & ~tagMask) === 0) return seenBefore;
      i = (i + 1) & mask;
      if (i === start) return notThere;
    }
    const slot = 3 * (reusable >= 0 ? reusable : i);
    words[slot] = (c & ~tagMask) | tagOf(this.generation);
    words[slot + 1] = a;
    words[slot + 2] = b;
    this.perGeneration[this.generation % this.perGeneration.length]!++;
    return recorded;
  }

  /**
   * Moves at least `step` slots of the table being migrated (its live ones) into the current
   * one, and on to just past a never-written slot; drops the old table once all are moved.
   */
  private migrate(step: number): void {
    const old = this.old!;
    const from = old.words;
    const oldMask = old.mask;
    const { words, mask } = this.slots;
    const live = this.liveTags;
    const capacity = old.capacity;
    let moved = this.moved;
    let j = (this.oldStart + moved) & oldMask;
    let written = 0;
    for (let budget = step; moved < capacity; j = (j + 1) & oldMask) {
      const w = from[3 * j]!;
      moved++;
      budget--;
      if (w === 0) {
        if (budget <= 0) break;
        continue;
      }
      if (live[w & tagMask] === 0) continue;
      const a = from[3 * j + 1]!;
      let i = a & mask;
      while (words[3 * i] !== 0) i = (i + 1) & mask;
      words[3 * i] = w;
      words[3 * i + 1] = a;
      words[3 * i + 2] = from[3 * j + 2]!;
      written++;
    }
    this.moved = moved;
    this.written += written;
    if (moved === capacity) {
      this.old = undefined;
      this.prepaid = 0;
      this.oldestStored = this.oldestAfterMigration;
    }
  }

  /** Keeps at least `horizonMs` of ids: the current generation plus `generationCount` full ones. */
  private rotate(now: number): void {
    // Called per id with the same `now` for a whole batch: nothing to do until the next generation starts.
    if (now < this.generationStart + this.generationMs) return;
    const steps = Math.floor((now - this.generationStart) / this.generationMs);
    if (steps <= 0) return;
    if (steps > this.generationCount) this.forgetAll(); // all expire: none may outlive its tag
    else this.refresh(this.generation + steps);
    for (let s = 1; s <= Math.min(steps, this.perGeneration.length); s++) this.perGeneration[(this.generation + s) % this.perGeneration.length] = 0;
    this.generation += steps;
    this.generationStart += steps * this.generationMs;
    this.markLiveTags();
  }

  /**
   * Before the generation moves on to `next`: keeps every slot younger than `tagPeriod`
   * generations, so that a tag never stands for two generations a slot could have. Expired slots
   * are dropped only by a rebuild, and a table whose live ids stay put (expired slots reused in
   * place) may never need one, so one is started once the oldest slot may be `refreshAge`
   * generations old. A migration still under way `refreshAge / 2` generations later (a router
   * routing so few events that its table has not moved in 64 generations) is done at once, and
   * so, if its table is as old, is one more: a short pause, rare.
   */
  private refresh(next: number): void {
    if (next - this.oldestStored < refreshAge) return;
    if (this.old === undefined) return this.rebuild();
    if (next - this.oldestStored < (refreshAge * 3) / 2) return;
    this.migrate(Infinity);
    if (next - this.oldestStored < refreshAge) return;
    this.rebuild();
    this.migrate(Infinity);
  }

  /** Drops every id (all are expired). */
  private forgetAll(): void {
    this.slots = new Slots(minCapacity);
    this.old = undefined;
    this.prepaid = 0;
    this.written = 0;
    this.perGeneration.fill(0);
    this.oldestStored = this.generation + this.generationCount + 1;
  }

  /** `liveTags` for the current generation. */
  private markLiveTags(): void {
    this.liveTags.fill(0);
    for (let g = this.generation - this.generationCount; g <= this.generation; g++) if (g >= 1) this.liveTags[tagOf(g)] = 1;
  }

  /**
   * Starts moving the live ids into a table sized for them (at most `startShare` of its rebuild load full), expired
   * slots dropped: `migrationStep` old slots per insert from here on (`migrate`), so no insert
   * waits for the whole table to be copied.
   */
  private rebuild(): void {
    const oldestLive = this.generation - this.generationCount;
    // One migration at a time: finish the previous one (it is done long before, see `migrationStep`).
    if (this.old !== undefined) this.migrate(Infinity);
    const old = this.slots;
    let capacity = minCapacity;
    // Room for the live ids, and for the inserts a migration spans (at `migrationStep`) twice over
    // before the new table's own limit: a table shrinks by 8x at most per rebuild, so the move
    // never has to go faster than that (nor be finished at once).
    while (capacity * this.rebuildLoad * startShare < this.size + 1 || capacity * this.rebuildLoad - this.size < (2 * old.capacity) / migrationStep) capacity *= 2;
    this.slots = new Slots(capacity);
    this.written = 0;
    // Start at a never-written slot (one exists: the load limit is below 1), moved at once.
    let start = 0;
    while (old.words[3 * start] !== 0) start++;
    this.old = old;
    this.oldestAfterMigration = oldestLive;
    this.oldStart = start;
    this.moved = 0;
    // Done within half the inserts the new table takes before its own load limit.
    const room = Math.max(1, capacity * this.rebuildLoad - this.size);
    this.step = Math.max(migrationStep, Math.ceil((2 * old.capacity) / room));
    this.migrate(1);
  }
}

/**
 * A slot's generation tag: 1…255 (0 marks a never-written slot), the generation modulo
 * `tagPeriod`, in the low 8 bits of the slot's first word.
 */
const tagMask = 0xff;
const tagPeriod = 255;
const tagOf = (generation: number) => 1 + (generation % tagPeriod);
/** Generations after which the oldest slots are moved (live) or dropped: well within `tagPeriod`. */
const refreshAge = 128;

/** `insertOld`'s answers. */
const notThere = 0;
const seenBefore = 1;
const recorded = 2;
/**
 * Old slots moved per insert during a migration. Why this many: ids whose home is not moved yet
 * are still written into the old table, so the part moved last takes a migration's worth of
 * inserts on top of its load: moved over capacity / 32 inserts, that is at most 1/32 (3 points)
 * more. Each insert then moves ~20 live ids (0.5–0.8 of 32), a few hundred ns.
 */
const migrationStep = 32;

const minCapacity = 1 << 12;
/** Rebuild once this share of slots has been written (linear probing slows down past it). */
const maxLoad = 0.7;
/**
 * A rebuilt table starts at most this share of its rebuild load full, so it takes a while to need
 * the next rebuild. Why not less: a growing table rebuilds just past its load, so twice the slots
 * take it (half its load); at most a third of the rebuild load (as before: 0.35 of the slots),
 * most tables grew 4x and were a fifth full, 60 bytes of table per id.
 */
const startShare = 0.6;

/**
 * A rebuild load for table `i` of several fed at the same rate (a node's partitions), between
 * 0.5 and 0.8, spread evenly (golden-ratio steps). Why: tables fed alike reach one load together.
 * When rebuilds were synchronous, measured at 450k events/s over 24 partitions: all 24 rebuilt
 * (100–300 ms each) within 6.5 s, a 5.5 s stall of the whole node. Migrations are incremental
 * now; spread, their extra work per insert still falls over a third of the tables' growth.
 */
export function staggeredLoad(i: number): number {
  return 0.5 + 0.3 * ((i * 0.6180339887) % 1);
}

/**
 * The table: per slot three words side by side: the fingerprint's third word with the tag of the
 * generation it was written in in its low 8 bits (all 0: never written), then the first two.
 * Why not a fourth word for the generation: 16 bytes a slot made the tables a fifth of a node's
 * memory at a million windows; 88 bits of fingerprint still make a wrong duplicate negligible.
 */
class Slots {
  readonly words: Uint32Array;
  readonly mask: number;

  constructor(readonly capacity: number) {
    this.words = new Uint32Array(3 * capacity);
    this.mask = capacity - 1;
  }

  get bytes(): number {
    return this.capacity * 12;
  }
}


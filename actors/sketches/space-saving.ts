/**
 * SpaceSaving (Metwally, Agrawal, El Abbadi 2005): a mergeable top-K / heavy-hitters summary for the
 * `top<K>:<field>` aggregate, with the parallel merge of Cafaro, Pulimeno, Tempesta (2016) — the
 * SpaceSaving form of the mergeable Misra–Gries summaries of Agarwal et al. (2012).
 *
 * A summary holds at most `capacity` counters, each `{ key, count, error }`. Callers choose the
 * capacity; for `top<K>` Tally uses {@link SpaceSaving.capacityForTopK} = max(8·K, 64).
 *
 * Guarantees. Let N be the total weight added (directly or through merges), f(x) the true weight of
 * key x in that stream, c the capacity, and m = {@link SpaceSaving.minCount} (the smallest count when
 * all c counters are in use, 0 otherwise). At all times — after any sequence of `add` and `merge`:
 *  1. every monitored key has  f(x) ≤ count ≤ f(x) + error, i.e. `count` is an upper bound and
 *     `count − error` a lower bound of the true weight;
 *  2. error ≤ m ≤ N/c  (the sum of all counts never exceeds N);
 *  3. every key with f(x) > m — in particular every key with f(x) > N/c — is monitored, and any
 *     key that is not monitored has f(x) ≤ m;
 *  4. while the stream (for a merge: the union of the merged streams) has at most c distinct keys,
 *     no counter is ever evicted: all counts are exact and all errors 0. In that regime `merge` is
 *     exactly multiset union, hence associative and independent of the shape of the merge tree.
 * Merging two summaries of streams with weights N₁, N₂ gives a summary whose guarantees 1–3 hold for
 * N = N₁ + N₂ against the true weights in the combined stream (errors add up: a merged error is at
 * most m₁ + m₂ ≤ the merged m). `merge` is always commutative (identical state either way round);
 * outside the exact regime it is not in general associative — different merge trees can keep
 * different counters — but every tree satisfies 1–3.
 *
 * Order and ties. Counters are totally ordered by count descending, then key ascending (JavaScript
 * string order, i.e. UTF-16 code units). `top` reports in that order, eviction removes the last
 * counter in that order, and a merge keeps the first c. The state is therefore a function of the
 * set of counters alone, so `encode` is canonical and decode∘encode restores identical behaviour.
 *
 * Weights are non-negative safe integers (0 is a no-op); N must stay ≤ 2^53 − 1. Keys are stored as
 * well-formed Unicode (a lone UTF-16 surrogate becomes U+FFFD) so that they survive UTF-8 encoding.
 *
 * Cost: `add` is a Map lookup plus O(log c) heap sifting; adding an already monitored key allocates
 * nothing. `merge` and `top` are O(c log c).
 */

export interface TopEntry {
  key: string;
  /** Upper bound of the key's true weight. */
  count: number;
  /** `count − error` is a lower bound of the key's true weight. */
  error: number;
}

/** Largest capacity accepted (also bounds what `decode` will allocate from untrusted bytes). */
export const maxSpaceSavingCapacity = 1 << 20;

const formatVersion = 1;
const maxVarintBytes = 8; // 56 bits ≥ 53
const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const surrogate = /[\uD800-\uDFFF]/;
const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

function wellFormed(key: string): string {
  return surrogate.test(key) ? key.replace(loneSurrogate, "\uFFFD") : key;
}

function checkCapacity(capacity: number): void {
  if (!Number.isSafeInteger(capacity) || capacity < 1 || capacity > maxSpaceSavingCapacity) {
    throw new RangeError(`SpaceSaving capacity must be an integer in [1, ${maxSpaceSavingCapacity}], got ${capacity}`);
  }
}

export class SpaceSaving {
  readonly capacity: number;
  private n = 0;
  private sum = 0;
  // Counters live in slots 0..n-1 (a slot keeps its index until its counter is evicted and replaced).
  private readonly keys: string[];
  private readonly counts: Float64Array;
  private readonly errors: Float64Array;
  // Binary min-heap of slots under `below` (root = the counter ranked last), and its inverse.
  private readonly heap: Int32Array;
  private readonly pos: Int32Array;
  private readonly index = new Map<string, number>();

  constructor(capacity: number) {
    checkCapacity(capacity);
    this.capacity = capacity;
    this.keys = new Array<string>(capacity).fill("");
    this.counts = new Float64Array(capacity);
    this.errors = new Float64Array(capacity);
    this.heap = new Int32Array(capacity);
    this.pos = new Int32Array(capacity);
  }

  /** Tally's default capacity for `top<k>`: max(8·k, 64). */
  static capacityForTopK(k: number): number {
    if (!Number.isSafeInteger(k) || k < 1) throw new RangeError(`top-K needs an integer K ≥ 1, got ${k}`);
    return Math.min(Math.max(8 * k, 64), maxSpaceSavingCapacity);
  }

  /** Total weight summarised (N). */
  get total(): number {
    return this.sum;
  }

  /** Number of counters in use (≤ capacity). */
  get size(): number {
    return this.n;
  }

  /** m: the smallest count once all counters are in use, else 0. Every unmonitored key has true weight ≤ m. */
  get minCount(): number {
    return this.n === this.capacity ? this.counts[this.heap[0]] : 0;
  }

  /** Adds `weight` (a non-negative safe integer) occurrences of `key`. */
  add(key: string, weight = 1): void {
    if (!(Number.isSafeInteger(weight) && weight > 0)) {
      if (weight === 0) return;
      throw new RangeError(`SpaceSaving weight must be a non-negative safe integer, got ${weight}`);
    }
    const total = this.sum + weight;
    if (total > Number.MAX_SAFE_INTEGER) throw new RangeError("SpaceSaving total weight exceeds 2^53 - 1");
    this.sum = total;
    let slot = this.index.get(key);
    if (slot === undefined) {
      const k = wellFormed(key);
      if (k !== key) slot = this.index.get(k);
      if (slot === undefined) {
        this.insert(k, weight);
        return;
      }
    }
    this.counts[slot] += weight;
    this.siftDown(this.pos[slot]);
  }

  /** Bounds for one key: monitored → its counter; otherwise count = error = m (true weight ∈ [0, m]). */
  estimate(key: string): TopEntry {
    const k = wellFormed(key);
    const slot = this.index.get(k);
    if (slot !== undefined) return { key: k, count: this.counts[slot], error: this.errors[slot] };
    const m = this.minCount;
    return { key: k, count: m, error: m };
  }

  /** The first `k` counters by count descending, ties by key ascending. */
  top(k = this.n): TopEntry[] {
    const slots = this.sortedSlots();
    const out: TopEntry[] = [];
    const end = Math.min(Math.max(0, Math.floor(k)), slots.length);
    for (let i = 0; i < end; i++) {
      const s = slots[i];
      out.push({ key: this.keys[s], count: this.counts[s], error: this.errors[s] });
    }
    return out;
  }

  clone(): SpaceSaving {
    const copy = new SpaceSaving(this.capacity);
    copy.load(this.top(), this.sum);
    return copy;
  }

  /**
   * Merges `other` (same capacity) into this summary: the union of both streams. A key monitored by
   * both gets the sums of counts and errors; a key monitored by only one gets the other summary's m
   * (0 unless that one is full) added to both its count and error; then the first `capacity`
   * counters in (count desc, key asc) order are kept. See the class comment for the guarantees.
   */
  merge(other: SpaceSaving): this {
    if (other.capacity !== this.capacity) {
      throw new RangeError(`cannot merge SpaceSaving summaries of capacity ${this.capacity} and ${other.capacity}`);
    }
    const total = this.sum + other.sum;
    if (total > Number.MAX_SAFE_INTEGER) throw new RangeError("SpaceSaving total weight exceeds 2^53 - 1");
    const m1 = this.minCount;
    const m2 = other.minCount;
    const combined: TopEntry[] = [];
    for (let s = 0; s < this.n; s++) {
      const key = this.keys[s];
      const o = other.index.get(key);
      combined.push(
        o === undefined
          ? { key, count: this.counts[s] + m2, error: this.errors[s] + m2 }
          : { key, count: this.counts[s] + other.counts[o], error: this.errors[s] + other.errors[o] },
      );
    }
    for (let s = 0; s < other.n; s++) {
      const key = other.keys[s];
      if (this.index.has(key)) continue;
      combined.push({ key, count: other.counts[s] + m1, error: other.errors[s] + m1 });
    }
    combined.sort(compareEntries);
    if (combined.length > this.capacity) combined.length = this.capacity;
    this.load(combined, total);
    return this;
  }

  /**
   * Compact canonical binary form: version byte 1, varint capacity, varint total, varint n, then n
   * counters in `top()` order, each varint UTF-8 byte length, key bytes, varint count, varint error.
   * Varints are unsigned LEB128 (minimal, ≤ 8 bytes).
   */
  encode(): Uint8Array {
    const entries = this.top();
    const keyBytes = entries.map((e) => utf8Encoder.encode(e.key));
    let size = 1 + varintSize(this.capacity) + varintSize(this.sum) + varintSize(entries.length);
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      size += varintSize(keyBytes[i].length) + keyBytes[i].length + varintSize(e.count) + varintSize(e.error);
    }
    const out = new Uint8Array(size);
    let at = 0;
    out[at++] = formatVersion;
    at = writeVarint(out, at, this.capacity);
    at = writeVarint(out, at, this.sum);
    at = writeVarint(out, at, entries.length);
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      at = writeVarint(out, at, keyBytes[i].length);
      out.set(keyBytes[i], at);
      at += keyBytes[i].length;
      at = writeVarint(out, at, e.count);
      at = writeVarint(out, at, e.error);
    }
    return out;
  }

  /**
   * Inverse of `encode`. Throws an `Error` ("SpaceSaving.decode: …") on anything that is not a valid
   * encoding: truncation, trailing bytes, unknown version, bad varints, invalid UTF-8, duplicate keys,
   * or counters that violate the summary's invariants.
   */
  static decode(bytes: Uint8Array): SpaceSaving {
    if (!(bytes instanceof Uint8Array)) fail("expected a Uint8Array");
    const r = new Reader(bytes);
    const version = r.byte();
    if (version !== formatVersion) fail(`unknown format version ${version}`);
    const capacity = r.varint("capacity");
    if (capacity < 1 || capacity > maxSpaceSavingCapacity) fail(`capacity ${capacity} out of range`);
    const total = r.varint("total");
    const n = r.varint("counter count");
    if (n > capacity) fail(`${n} counters exceed capacity ${capacity}`);
    const entries: TopEntry[] = [];
    const seen = new Set<string>();
    let sum = 0;
    let min = Infinity;
    for (let i = 0; i < n; i++) {
      const len = r.varint("key length");
      const raw = r.bytes(len);
      let key: string;
      try {
        key = utf8Decoder.decode(raw);
      } catch {
        fail(`counter ${i}: key is not valid UTF-8`);
      }
      if (seen.has(key)) fail(`duplicate key ${JSON.stringify(key)}`);
      seen.add(key);
      const count = r.varint("count");
      const error = r.varint("error");
      if (count < 1) fail(`counter ${i}: count must be ≥ 1`);
      if (error >= count) fail(`counter ${i}: error ${error} must be below count ${count}`);
      sum += count;
      if (sum > total) fail(`counts add up to more than the total ${total}`);
      if (count < min) min = count;
      entries.push({ key, count, error });
    }
    if (!r.done()) fail(`${bytes.length - r.at} trailing bytes`);
    if (n < capacity) {
      // Never full ⇒ never evicted: exact.
      if (sum !== total) fail(`a summary that is not full must be exact, but counts add up to ${sum} ≠ total ${total}`);
      for (const e of entries) if (e.error !== 0) fail(`a summary that is not full must be exact, but ${JSON.stringify(e.key)} has error ${e.error}`);
    } else {
      for (const e of entries) if (e.error > min) fail(`error ${e.error} of ${JSON.stringify(e.key)} exceeds the smallest count ${min}`);
    }
    const s = new SpaceSaving(capacity);
    s.load(entries, total);
    return s;
  }

  // ---- internals ----

  private insert(key: string, weight: number): void {
    if (this.n < this.capacity) {
      const slot = this.n++;
      this.keys[slot] = key;
      this.counts[slot] = weight;
      this.errors[slot] = 0;
      this.index.set(key, slot);
      this.heap[slot] = slot;
      this.pos[slot] = slot;
      this.siftUp(slot);
      return;
    }
    // Evict the counter ranked last (the heap root) and reuse its slot: count m + w, error m.
    const slot = this.heap[0];
    const m = this.counts[slot];
    this.index.delete(this.keys[slot]);
    this.keys[slot] = key;
    this.counts[slot] = m + weight;
    this.errors[slot] = m;
    this.index.set(key, slot);
    this.siftDown(0);
  }

  /** Replaces the state with `entries` (distinct keys, at most capacity) and total. */
  private load(entries: readonly TopEntry[], total: number): void {
    this.index.clear();
    this.n = entries.length;
    this.sum = total;
    for (let s = 0; s < entries.length; s++) {
      const e = entries[s];
      this.keys[s] = e.key;
      this.counts[s] = e.count;
      this.errors[s] = e.error;
      this.index.set(e.key, s);
      this.heap[s] = s;
      this.pos[s] = s;
    }
    for (let s = entries.length; s < this.capacity; s++) this.keys[s] = "";
    for (let i = (this.n >> 1) - 1; i >= 0; i--) this.siftDown(i);
  }

  private sortedSlots(): number[] {
    const slots: number[] = [];
    for (let s = 0; s < this.n; s++) slots.push(s);
    const { keys, counts } = this;
    return slots.sort((a, b) => counts[b] - counts[a] || (keys[a] < keys[b] ? -1 : keys[a] > keys[b] ? 1 : 0));
  }

  /** Slot a ranks after slot b: smaller count, or equal count and larger key. */
  private below(a: number, b: number): boolean {
    const ca = this.counts[a];
    const cb = this.counts[b];
    return ca < cb || (ca === cb && this.keys[a] > this.keys[b]);
  }

  private siftUp(i: number): void {
    const heap = this.heap;
    const slot = heap[i];
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = heap[parent];
      if (!this.below(slot, p)) break;
      heap[i] = p;
      this.pos[p] = i;
      i = parent;
    }
    heap[i] = slot;
    this.pos[slot] = i;
  }

  private siftDown(i: number): void {
    const heap = this.heap;
    const n = this.n;
    const slot = heap[i];
    for (;;) {
      let child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && this.below(heap[child + 1], heap[child])) child++;
      const c = heap[child];
      if (!this.below(c, slot)) break;
      heap[i] = c;
      this.pos[c] = i;
      i = child;
    }
    heap[i] = slot;
    this.pos[slot] = i;
  }
}

function compareEntries(a: TopEntry, b: TopEntry): number {
  return b.count - a.count || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
}

function fail(message: string): never {
  throw new Error(`SpaceSaving.decode: ${message}`);
}

function varintSize(value: number): number {
  let size = 1;
  while (value >= 128) {
    value = Math.floor(value / 128);
    size++;
  }
  return size;
}

function writeVarint(out: Uint8Array, at: number, value: number): number {
  while (value >= 128) {
    out[at++] = (value % 128) | 128;
    value = Math.floor(value / 128);
  }
  out[at++] = value;
  return at;
}

class Reader {
  at = 0;
  constructor(private readonly buf: Uint8Array) {}

  done(): boolean {
    return this.at === this.buf.length;
  }

  byte(): number {
    if (this.at >= this.buf.length) fail("truncated input");
    return this.buf[this.at++];
  }

  bytes(length: number): Uint8Array {
    if (length > this.buf.length - this.at) fail("truncated input");
    const out = this.buf.subarray(this.at, this.at + length);
    this.at += length;
    return out;
  }

  varint(what: string): number {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < maxVarintBytes; i++) {
      const b = this.byte();
      value += (b & 127) * scale;
      if (b < 128) {
        if (b === 0 && i > 0) fail(`${what}: non-minimal varint`);
        if (value > Number.MAX_SAFE_INTEGER) fail(`${what}: varint exceeds 2^53 - 1`);
        return value;
      }
      scale *= 128;
    }
    fail(`${what}: varint longer than ${maxVarintBytes} bytes`);
  }
}

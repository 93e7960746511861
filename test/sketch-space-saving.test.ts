import assert from "node:assert/strict";
import { test } from "node:test";
import { SpaceSaving, type TopEntry } from "../actors/sketches/space-saving.js";
import { mulberry32 as prng } from "../sim/fleet.js";

// ---- deterministic helpers (no Math.random) ----


function int(random: () => number, lo: number, hi: number): number {
  return lo + Math.floor(random() * (hi - lo + 1));
}

type Item = [key: string, weight: number];

const exotic = ["é", "日本", "🙂", "a b", "", "K", "k", "zz"];
function keyName(i: number): string {
  return i < exotic.length ? exotic[i] : `k${i.toString(36)}`;
}

function build(capacity: number, items: readonly Item[]): SpaceSaving {
  const s = new SpaceSaving(capacity);
  for (const [key, weight] of items) s.add(key, weight);
  return s;
}

function truthOf(items: readonly Item[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const [key, weight] of items) m.set(key, (m.get(key) ?? 0) + weight);
  return m;
}

function byRank(a: { key: string; count: number }, b: { key: string; count: number }): number {
  return b.count - a.count || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
}

/** The exact answer: every key with weight > 0, error 0, in (count desc, key asc) order. */
function exactTop(truth: Map<string, number>): TopEntry[] {
  return [...truth]
    .filter(([, count]) => count > 0)
    .map(([key, count]) => ({ key, count, error: 0 }))
    .sort(byRank);
}

function sumOf(truth: Map<string, number>): number {
  let n = 0;
  for (const v of truth.values()) n += v;
  return n;
}

/**
 * The documented guarantees, checked against the true weights `f` of the summarised stream:
 * f ≤ count ≤ f + error, error ≤ m ≤ N/c, Σ counts ≤ N, every unmonitored key has f ≤ m.
 */
function checkGuarantees(s: SpaceSaving, f: (key: string) => number, allKeys: Iterable<string>, N: number): void {
  assert.equal(s.total, N);
  const m = s.minCount;
  assert.ok(m <= N / s.capacity, `m=${m} > N/c=${N / s.capacity}`);
  const top = s.top();
  assert.equal(top.length, s.size);
  assert.ok(s.size <= s.capacity);
  let sum = 0;
  const monitored = new Set<string>();
  for (let i = 0; i < top.length; i++) {
    const e = top[i];
    const t = f(e.key);
    sum += e.count;
    monitored.add(e.key);
    assert.ok(t <= e.count && e.count <= t + e.error, `${e.key}: true ${t}, count ${e.count}, error ${e.error}`);
    assert.ok(e.error <= m, `${e.key}: error ${e.error} > m ${m}`);
    assert.ok(e.error <= N / s.capacity);
    if (i > 0) assert.ok(byRank(top[i - 1], e) < 0, "top() order");
  }
  assert.ok(sum <= N, `Σ counts ${sum} > N ${N}`);
  for (const key of allKeys) {
    if (!monitored.has(key)) assert.ok(f(key) <= m, `unmonitored ${key} has true weight ${f(key)} > m ${m}`);
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** Merges summaries along a random binary tree (clones; inputs untouched). */
function mergeRandomTree(parts: readonly SpaceSaving[], random: () => number): SpaceSaving {
  const pool = parts.map((p) => p.clone());
  while (pool.length > 1) {
    const i = int(random, 0, pool.length - 1);
    const a = pool.splice(i, 1)[0];
    const j = int(random, 0, pool.length - 1);
    const b = pool.splice(j, 1)[0];
    pool.push(random() < 0.5 ? a.merge(b) : b.merge(a));
  }
  return pool[0];
}

// ---- API basics ----

test("SpaceSaving: API basics and argument checking", () => {
  assert.equal(SpaceSaving.capacityForTopK(1), 64);
  assert.equal(SpaceSaving.capacityForTopK(10), 80);
  assert.throws(() => SpaceSaving.capacityForTopK(0), RangeError);
  for (const bad of [0, -1, 1.5, NaN, Infinity, 2 ** 21]) assert.throws(() => new SpaceSaving(bad), RangeError);

  const s = new SpaceSaving(2);
  assert.deepEqual(s.top(), []);
  assert.equal(s.total, 0);
  assert.equal(s.minCount, 0);
  for (const bad of [-1, 1.5, NaN, Infinity, 2 ** 53]) assert.throws(() => s.add("x", bad), RangeError);
  s.add("x", 0);
  assert.equal(s.size, 0);
  s.add("a", 3);
  s.add("b");
  s.add("b", 2);
  assert.deepEqual(s.top(), [
    { key: "a", count: 3, error: 0 },
    { key: "b", count: 3, error: 0 },
  ]);
  assert.equal(s.minCount, 3);
  assert.deepEqual(s.top(1), [{ key: "a", count: 3, error: 0 }]);
  // Full: "c" evicts the counter ranked last ("b"), inheriting its count as error.
  s.add("c");
  assert.deepEqual(s.top(), [
    { key: "c", count: 4, error: 3 },
    { key: "a", count: 3, error: 0 },
  ]);
  assert.deepEqual(s.estimate("a"), { key: "a", count: 3, error: 0 });
  assert.deepEqual(s.estimate("b"), { key: "b", count: 3, error: 3 }); // unmonitored: true weight in [0, m]
  assert.equal(s.total, 7);
  assert.throws(() => s.merge(new SpaceSaving(3)), RangeError);

  // Lone surrogates are stored as U+FFFD (so keys survive UTF-8) and still hit the same counter.
  const u = new SpaceSaving(4);
  u.add("\uD800x");
  u.add("\uD800x", 2);
  u.add("\uFFFDx");
  assert.deepEqual(u.top(), [{ key: "\uFFFDx", count: 4, error: 0 }]);
  assert.deepEqual(SpaceSaving.decode(u.encode()).top(), u.top());
});

// ---- exact regime ----

function exactCase(seed: number): { capacity: number; items: Item[]; random: () => number } {
  const random = prng(seed);
  const capacity = int(random, 1, 40);
  const distinct = random() < 0.3 ? capacity : int(random, 1, capacity); // often exactly full
  const length = int(random, 0, 400);
  const items: Item[] = [];
  for (let i = 0; i < length; i++) {
    const k = Math.floor(distinct * random() ** 2); // skewed, so counts differ and also tie
    items.push([keyName(k), random() < 0.8 ? 1 : int(random, 0, 5)]);
  }
  return { capacity, items, random };
}

test("SpaceSaving: exact counts and order while distinct keys ≤ capacity", () => {
  for (let seed = 1; seed <= 300; seed++) {
    const { capacity, items } = exactCase(seed);
    const s = build(capacity, items);
    const truth = truthOf(items);
    const expected = exactTop(truth);
    assert.deepEqual(s.top(), expected, `seed ${seed}`);
    assert.deepEqual(s.top(3), expected.slice(0, 3));
    assert.equal(s.total, sumOf(truth));
    assert.equal(s.minCount, expected.length === capacity ? expected[expected.length - 1].count : 0);
    for (const e of expected) assert.deepEqual(s.estimate(e.key), e);
  }
});

test("SpaceSaving: in the exact regime merge is multiset union — commutative, associative, any tree shape", () => {
  for (let seed = 1; seed <= 300; seed++) {
    const { capacity, items, random } = exactCase(1000 + seed);
    const parts: Item[][] = [[], [], [], [], []];
    for (const item of items) parts[int(random, 0, parts.length - 1)].push(item);
    const [a, b, c] = parts.slice(0, 3).map((p) => build(capacity, p));
    const ab = a.clone().merge(b);
    const ba = b.clone().merge(a);
    const abItems = [...parts[0], ...parts[1]];
    assert.deepEqual(ab.top(), exactTop(truthOf(abItems)), `seed ${seed}`);
    assert.deepEqual(ab.top(), build(capacity, abItems).top());
    assert.ok(sameBytes(ab.encode(), ba.encode()), "commutative");
    assert.equal(ab.total, a.total + b.total);

    const abc = [...abItems, ...parts[2]];
    const left = a.clone().merge(b).merge(c);
    const right = a.clone().merge(b.clone().merge(c));
    const other = c.clone().merge(a).merge(b);
    const exact = exactTop(truthOf(abc));
    assert.deepEqual(left.top(), exact);
    assert.deepEqual(right.top(), exact);
    assert.deepEqual(other.top(), exact);
    assert.ok(sameBytes(left.encode(), right.encode()), "associative");

    // Any merge tree over all five shards (including empty ones) gives the exact summary.
    const all = parts.map((p) => build(capacity, p));
    const expectedAll = exactTop(truthOf(items));
    for (let t = 0; t < 3; t++) assert.deepEqual(mergeRandomTree(all, random).top(), expectedAll);
    // Merging with an empty summary is the identity.
    assert.ok(sameBytes(a.clone().merge(new SpaceSaving(capacity)).encode(), a.encode()));
  }
});

// ---- overflow regime, small random cases ----

test("SpaceSaving: guarantees hold under eviction and arbitrary merge trees; merge is commutative", () => {
  for (let seed = 1; seed <= 200; seed++) {
    const random = prng(5000 + seed);
    const capacity = int(random, 1, 12);
    const distinct = int(random, capacity + 1, 60);
    const skew = 1 + random() * 3;
    const shards: Item[][] = [];
    const shardCount = int(random, 2, 6);
    for (let i = 0; i < shardCount; i++) shards.push([]);
    const all: Item[] = [];
    const length = int(random, 50, 600);
    for (let i = 0; i < length; i++) {
      const item: Item = [keyName(Math.floor(distinct * random() ** skew)), random() < 0.7 ? 1 : int(random, 1, 9)];
      all.push(item);
      // Sometimes partition by key (disjoint shards), otherwise at random.
      const shard = seed % 3 === 0 ? [...item[0]].reduce((h, ch) => h + ch.codePointAt(0)!, 0) % shardCount : int(random, 0, shardCount - 1);
      shards[shard].push(item);
    }
    const truth = truthOf(all);
    const f = (key: string) => truth.get(key) ?? 0;
    const N = sumOf(truth);
    checkGuarantees(build(capacity, all), f, truth.keys(), N);

    const summaries = shards.map((p) => build(capacity, p));
    shards.forEach((p, i) => {
      const t = truthOf(p);
      checkGuarantees(summaries[i], (k) => t.get(k) ?? 0, t.keys(), sumOf(t));
    });
    for (let t = 0; t < 4; t++) checkGuarantees(mergeRandomTree(summaries, random), f, truth.keys(), N);
    const [a, b] = summaries;
    assert.ok(sameBytes(a.clone().merge(b).encode(), b.clone().merge(a).encode()), `commutative, seed ${seed}`);
    // Self-merge is the union of a stream with itself.
    const doubled = a.clone();
    doubled.merge(doubled);
    const ta = truthOf(shards[0]);
    checkGuarantees(doubled, (k) => 2 * (ta.get(k) ?? 0), ta.keys(), 2 * a.total);
  }
});

// ---- Zipf streams ----

const zipfKeys = 100_000;
const zipfItems = 1_000_000;
const zipfCapacity = 100;
const zipfExponent = 1.1;

interface ZipfStream {
  names: string[];
  stream: Int32Array; // key ids
  truth: Float64Array; // by key id
  idOf: Map<string, number>;
  trueTopIds: number[]; // by true count desc
}

let zipfCache: ZipfStream | undefined;
function zipf(): ZipfStream {
  if (zipfCache) return zipfCache;
  const random = prng(20240611);
  const cdf = new Float64Array(zipfKeys);
  let acc = 0;
  for (let r = 0; r < zipfKeys; r++) cdf[r] = acc += 1 / (r + 1) ** zipfExponent;
  // Key names in random order, so popularity rank and key order are unrelated.
  const ids = Array.from({ length: zipfKeys }, (_, i) => i);
  for (let i = zipfKeys - 1; i > 0; i--) {
    const j = int(random, 0, i);
    [ids[i], ids[j]] = [ids[j], ids[i]];
  }
  const names = ids.map((i) => `code-${i.toString(36)}`);
  const stream = new Int32Array(zipfItems);
  const truth = new Float64Array(zipfKeys);
  for (let i = 0; i < zipfItems; i++) {
    const u = random() * acc;
    let lo = 0;
    let hi = zipfKeys - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid] < u) lo = mid + 1;
      else hi = mid;
    }
    stream[i] = lo;
    truth[lo]++;
  }
  const idOf = new Map(names.map((n, i) => [n, i]));
  const trueTopIds = Array.from({ length: zipfKeys }, (_, i) => i)
    .sort((a, b) => truth[b] - truth[a] || a - b)
    .slice(0, 20);
  return (zipfCache = { names, stream, truth, idOf, trueTopIds });
}

function checkZipfSummary(s: SpaceSaving, label: string): void {
  const z = zipf();
  const f = (key: string) => z.truth[z.idOf.get(key)!];
  checkGuarantees(s, f, z.names, zipfItems);
  const top = s.top(10);
  const reported = new Set(top.map((e) => e.key));
  for (const id of z.trueTopIds.slice(0, 10)) {
    assert.ok(reported.has(z.names[id]), `${label}: true top-10 key ${z.names[id]} (${z.truth[id]}) missing from top(10)`);
  }
  // Order may differ from the true order only among near-ties: if i is reported before j, then
  // true(j) − true(i) ≤ error(i) (follows from count(i) ≥ count(j) and the bounds).
  for (let i = 0; i < top.length; i++) {
    for (let j = i + 1; j < top.length; j++) {
      assert.ok(f(top[j].key) - f(top[i].key) <= top[i].error, `${label}: inversion beyond error`);
    }
  }
}

test("SpaceSaving: Zipf(1.1), 1M items over 100k keys, capacity 100", (t) => {
  const z = zipf();
  const s = new SpaceSaving(zipfCapacity);
  const { names, stream } = z;
  const start = performance.now();
  for (let i = 0; i < zipfItems; i++) s.add(names[stream[i]]);
  const ms = performance.now() - start;
  t.diagnostic(`add() throughput, Zipf stream with evictions: ${((zipfItems / ms) * 1000 / 1e6).toFixed(2)}M adds/s (${ms.toFixed(0)} ms for 1M)`);
  t.diagnostic(`N/c = ${zipfItems / zipfCapacity}, m = ${s.minCount}, 10th/11th true counts = ${z.truth[z.trueTopIds[9]]}/${z.truth[z.trueTopIds[10]]}, encoded ${s.encode().length} bytes`);
  checkZipfSummary(s, "single");

  // All-hit throughput: every key already monitored (the no-allocation path).
  const hot = new SpaceSaving(zipfCapacity);
  const hotNames = names.slice(0, zipfCapacity);
  for (const n of hotNames) hot.add(n);
  const start2 = performance.now();
  for (let i = 0; i < zipfItems; i++) hot.add(hotNames[stream[i] % zipfCapacity]);
  const ms2 = performance.now() - start2;
  t.diagnostic(`add() throughput, monitored keys only: ${((zipfItems / ms2) * 1000 / 1e6).toFixed(2)}M adds/s`);
});

test("SpaceSaving: Zipf stream in 4 shards, merged, keeps the guarantees for the whole stream", (t) => {
  const z = zipf();
  const random = prng(77);
  const { names, stream } = z;
  const randomShards = [0, 1, 2, 3].map(() => new SpaceSaving(zipfCapacity));
  const keyShards = [0, 1, 2, 3].map(() => new SpaceSaving(zipfCapacity));
  for (let i = 0; i < zipfItems; i++) {
    randomShards[Math.floor(random() * 4)].add(names[stream[i]]);
    keyShards[stream[i] & 3].add(names[stream[i]]);
  }
  for (const [label, shards] of [
    ["random shards", randomShards],
    ["key-partitioned shards", keyShards],
  ] as const) {
    const balanced = shards[0].clone().merge(shards[1]).merge(shards[2].clone().merge(shards[3]));
    const chain = shards[3].clone().merge(shards[1]).merge(shards[0]).merge(shards[2]);
    t.diagnostic(`${label}: merged m = ${balanced.minCount} (balanced tree), ${chain.minCount} (chain)`);
    checkZipfSummary(balanced, `${label}, balanced`);
    checkZipfSummary(chain, `${label}, chain`);
    const ab = shards[0].clone().merge(shards[1]);
    const ba = shards[1].clone().merge(shards[0]);
    assert.ok(sameBytes(ab.encode(), ba.encode()), `${label}: commutative`);
  }
});

// ---- encoding ----

test("SpaceSaving: encode/decode round-trips identically (state and future behaviour)", () => {
  const z = zipf();
  const samples: SpaceSaving[] = [new SpaceSaving(1), new SpaceSaving(64)];
  for (let seed = 1; seed <= 40; seed++) {
    const { capacity, items } = exactCase(9000 + seed);
    samples.push(build(capacity, items));
  }
  const big = new SpaceSaving(zipfCapacity);
  for (let i = 0; i < 200_000; i++) big.add(z.names[z.stream[i]], 1 + (i % 3));
  samples.push(big, big.clone().merge(build(zipfCapacity, [["code-0", 2 ** 40]])));
  const random = prng(4242);
  for (const s of samples) {
    const bytes = s.encode();
    const d = SpaceSaving.decode(bytes);
    assert.equal(d.capacity, s.capacity);
    assert.equal(d.total, s.total);
    assert.equal(d.size, s.size);
    assert.equal(d.minCount, s.minCount);
    assert.deepEqual(d.top(), s.top());
    assert.ok(sameBytes(d.encode(), bytes));
    // Same future: feed both the same items and compare.
    for (let i = 0; i < 300; i++) {
      const key = z.names[z.stream[int(random, 0, zipfItems - 1)]];
      s.add(key);
      d.add(key);
    }
    assert.ok(sameBytes(d.encode(), s.encode()));
  }
});

function isDecodeError(e: unknown): boolean {
  return e instanceof Error && e.constructor === Error && e.message.startsWith("SpaceSaving.decode: ");
}

/** decode either throws the decode Error or returns a self-consistent summary. */
function decodeOrThrow(bytes: Uint8Array): "ok" | "threw" {
  let s: SpaceSaving;
  try {
    s = SpaceSaving.decode(bytes);
  } catch (e) {
    assert.ok(isDecodeError(e), `unexpected ${String(e)}`);
    return "threw";
  }
  assert.ok(s instanceof SpaceSaving);
  assert.deepEqual(SpaceSaving.decode(s.encode()).top(), s.top());
  return "ok";
}

function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 128) {
    out.push((n % 128) | 128);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}

function encodeRaw(version: number, capacity: number, total: number, entries: [string | number[], number, number][]): Uint8Array {
  const out = [version, ...varint(capacity), ...varint(total), ...varint(entries.length)];
  for (const [key, count, error] of entries) {
    const kb = typeof key === "string" ? [...new TextEncoder().encode(key)] : key;
    out.push(...varint(kb.length), ...kb, ...varint(count), ...varint(error));
  }
  return Uint8Array.from(out);
}

test("SpaceSaving: garbage, truncated and inconsistent bytes throw an Error", () => {
  // Sanity: the raw encoder matches encode().
  const ok = build(3, [["a", 2], ["b", 1], ["c", 1], ["d", 1]]);
  assert.ok(sameBytes(encodeRaw(1, 3, 5, [["a", 2, 0], ["d", 2, 1], ["b", 1, 0]]), ok.encode()));

  const bad: [string, Uint8Array][] = [
    ["empty", new Uint8Array(0)],
    ["version 0", encodeRaw(0, 3, 0, [])],
    ["version 2", encodeRaw(2, 3, 0, [])],
    ["capacity 0", encodeRaw(1, 0, 0, [])],
    ["capacity too large", encodeRaw(1, 2 ** 21, 0, [])],
    ["more counters than capacity", encodeRaw(1, 1, 2, [["a", 1, 0], ["b", 1, 0]])],
    ["invalid UTF-8", encodeRaw(1, 4, 1, [[[0xff, 0xfe], 1, 0]])],
    ["truncated UTF-8", encodeRaw(1, 4, 1, [[[0xe6, 0x97], 1, 0]])],
    ["duplicate key", encodeRaw(1, 4, 2, [["a", 1, 0], ["a", 1, 0]])],
    ["count 0", encodeRaw(1, 4, 0, [["a", 0, 0]])],
    ["error ≥ count", encodeRaw(1, 1, 3, [["a", 3, 3]])],
    ["counts exceed total", encodeRaw(1, 2, 3, [["a", 2, 0], ["b", 2, 1]])],
    ["not full but inexact total", encodeRaw(1, 4, 5, [["a", 2, 0]])],
    ["not full but has error", encodeRaw(1, 4, 3, [["a", 3, 1]])],
    ["full, error above the minimum", encodeRaw(1, 2, 10, [["a", 8, 3], ["b", 2, 0]])],
    ["trailing byte", Uint8Array.from([...encodeRaw(1, 4, 1, [["a", 1, 0]]), 0])],
    ["non-minimal varint", Uint8Array.from([1, 0x84, 0x00, 0, 0])],
    ["9-byte varint", Uint8Array.from([1, 4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0])],
    ["varint above 2^53", Uint8Array.from([1, 4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0])],
    ["key length beyond input", Uint8Array.from([1, 4, 1, 1, 0xff, 0xff, 0x03, 0x61])],
    ["huge counter count", Uint8Array.from([1, 0x80, 0x80, 0x40, 0, 0xff, 0xff, 0xff, 0x0f])],
  ];
  for (const [label, bytes] of bad) {
    assert.throws(() => SpaceSaving.decode(bytes), isDecodeError, label);
  }
  assert.throws(() => SpaceSaving.decode([1, 1, 0, 0] as unknown as Uint8Array), isDecodeError, "not a Uint8Array");
  assert.throws(() => SpaceSaving.decode(null as unknown as Uint8Array), isDecodeError, "null");

  // Every proper prefix of a valid encoding is rejected (the counter count is stated up front).
  const z = zipf();
  const valid = [ok, build(64, [["é", 3], ["🙂", 1]]), new SpaceSaving(5)];
  const zs = new SpaceSaving(32);
  for (let i = 0; i < 20_000; i++) zs.add(z.names[z.stream[i]], 1 + (i % 1000));
  valid.push(zs);
  for (const s of valid) {
    const bytes = s.encode();
    for (let len = 0; len < bytes.length; len++) {
      assert.throws(() => SpaceSaving.decode(bytes.subarray(0, len)), isDecodeError, `prefix ${len}/${bytes.length}`);
    }
  }

  // Random garbage (half of it starting with the right version byte) and random byte mutations of
  // valid encodings: decode throws the decode Error or returns a self-consistent summary.
  const random = prng(99);
  let threw = 0;
  const trials = 3000;
  for (let i = 0; i < trials; i++) {
    const bytes = new Uint8Array(int(random, 0, 96));
    for (let j = 0; j < bytes.length; j++) bytes[j] = int(random, 0, 255);
    if (bytes.length && random() < 0.5) bytes[0] = 1;
    if (decodeOrThrow(bytes) === "threw") threw++;
  }
  assert.ok(threw > trials * 0.95, `only ${threw}/${trials} garbage inputs rejected`);
  for (const s of valid) {
    const bytes = s.encode();
    for (let i = 0; i < 400; i++) {
      const m = bytes.slice();
      const flips = int(random, 1, 3);
      for (let f = 0; f < flips; f++) m[int(random, 0, m.length - 1)] ^= int(random, 1, 255);
      decodeOrThrow(m);
    }
  }
});

import assert from "node:assert/strict";
import { test } from "node:test";
import { HyperLogLog, murmurHash3x86_128 } from "../actors/sketches/hyperloglog.js";

// Deterministic PRNG (mulberry32); `real53` gives a uniform double in [0, 1) with 53 random bits.
function rng(seed: number): { u32: () => number; real53: () => number } {
  let a = seed >>> 0;
  const u32 = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  const real53 = (): number => ((u32() >>> 5) * 67108864 + (u32() >>> 6)) / 9007199254740992;
  return { u32, real53 };
}

function shuffle<T>(items: T[], u32: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = u32() % (i + 1);
    [items[i], items[j]] = [items[j], items[i]];
  }
  return items;
}

function range(prefix: string, from: number, to: number): string[] {
  const out: string[] = [];
  for (let i = from; i < to; i++) out.push(`${prefix}${i}`);
  return out;
}

function sketchOf(values: Iterable<string>, precision?: number): HyperLogLog {
  const h = new HyperLogLog(precision === undefined ? {} : { precision });
  for (const v of values) h.add(v);
  return h;
}

const sigma = HyperLogLog.relativeStandardError(14);
const threshold = HyperLogLog.sparseThreshold(14);

function assertWithin3Sigma(h: HyperLogLog, exact: number, what: string): number {
  const rel = Math.abs(h.count() - exact) / exact;
  assert.ok(rel <= 3 * sigma, `${what}: estimate ${h.count()} vs exact ${exact} (error ${(rel * 100).toFixed(3)}% > 3σ = ${(3 * sigma * 100).toFixed(3)}%)`);
  return rel;
}

function assertDecodeError(bytes: unknown, what: string): void {
  assert.throws(
    () => HyperLogLog.decode(bytes as Uint8Array),
    (e: unknown) => e instanceof Error && /HyperLogLog\.decode/.test(e.message),
    what,
  );
}

/** Decodes `bytes`; must either throw an Error, or succeed with a sketch that re-encodes to `bytes`. */
function decodeOrError(bytes: Uint8Array, what: string): void {
  let decoded: HyperLogLog;
  try {
    decoded = HyperLogLog.decode(bytes);
  } catch (e) {
    assert.ok(e instanceof Error, `${what}: threw a non-Error ${String(e)}`);
    assert.match(e.message, /HyperLogLog\.decode/);
    return;
  }
  assert.deepEqual(decoded.encode(), bytes, `${what}: accepted a non-canonical encoding`);
  assert.ok(Number.isFinite(decoded.count()), `${what}: non-finite count`);
}

test("hash: MurmurHash3_x86_128 passes SMHasher's verification value (0xB3ECE62A)", () => {
  const key = new Uint8Array(256);
  const hashes = new Uint8Array(16 * 256);
  const view = new DataView(hashes.buffer);
  for (let i = 0; i < 256; i++) {
    key[i] = i;
    const words = murmurHash3x86_128(key.subarray(0, i), 256 - i);
    for (let j = 0; j < 4; j++) view.setUint32(16 * i + 4 * j, words[j], true);
  }
  assert.equal(murmurHash3x86_128(hashes, 0)[0], 0xb3ece62a);
  assert.deepEqual(murmurHash3x86_128(new Uint8Array(0), 0), [0, 0, 0, 0]);
});

test("hash: the value hash is h1·2^32 + h2 of MurmurHash3_x86_128(UTF-8 bytes, HASH_SEED), stable", () => {
  const samples = [
    "", "a", "abc", "hello world", "x".repeat(15), "y".repeat(16), "z".repeat(17), "0123456789abcdef0123456789abcdef!",
    "héllo", "日本語テキスト", "emoji 😀🎉", "lone \ud800 surrogate", "\udc00 low first", "trailing high \udbff",
    "long ".repeat(1000),
  ];
  for (const s of samples) {
    const [h1, h2] = murmurHash3x86_128(Buffer.from(s, "utf8"), HyperLogLog.HASH_SEED);
    assert.equal(HyperLogLog.hashValue(s), (BigInt(h1) << 32n) | BigInt(h2), JSON.stringify(s.slice(0, 40)));
  }
  // Pinned values: the hash is part of the encoded format and must not drift.
  assert.equal(HyperLogLog.hashValue("").toString(16), pinnedEmpty);
  assert.equal(HyperLogLog.hashValue("user-42").toString(16), pinnedUser42);
  // Short strings after a long one (the scratch buffer is reused).
  assert.equal(HyperLogLog.hashValue("").toString(16), pinnedEmpty);
});

const pinnedEmpty = "2574a2c06dee246b";
const pinnedUser42 = "3109bebc4d2b1208";

test("registers: index = top p bits, rank = leading zeros of the other 64-p bits + 1 (BigInt oracle)", () => {
  for (const p of [4, 5, 10, 14, 16]) {
    const m = 2 ** p;
    const values = range(`oracle-p${p}-`, 0, Math.max(3 * m, 2000));
    const h = sketchOf(values, p);
    assert.equal(h.isSparse, false);
    const q = 64 - p;
    const regs = new Uint8Array(m);
    for (const v of values) {
      const x = HyperLogLog.hashValue(v);
      const idx = Number(x >> BigInt(q));
      const rest = x & ((1n << BigInt(q)) - 1n);
      const rank = rest === 0n ? q + 1 : q - rest.toString(2).length + 1;
      if (rank > regs[idx]) regs[idx] = rank;
    }
    const expected = new Uint8Array(1 + (3 * m) / 4);
    expected[0] = (2 << 5) | p;
    for (let i = 0, pos = 1; i < m; i += 4) {
      const v = regs[i] | (regs[i + 1] << 6) | (regs[i + 2] << 12) | (regs[i + 3] << 18);
      expected[pos++] = v & 0xff;
      expected[pos++] = (v >>> 8) & 0xff;
      expected[pos++] = v >>> 16;
    }
    assert.deepEqual(h.encode(), expected, `p=${p}`);
  }
});

test("sparse: exact counts for small sets, duplicates ignored; dense beyond m/8 distinct", () => {
  const r = rng(7);
  for (const n of [0, 1, 2, 3, 10, 100, 1000, threshold - 1, threshold]) {
    const distinct = range(`exact-${n}-`, 0, n);
    const stream: string[] = [];
    for (const v of distinct) for (let k = 1 + (r.u32() % 3); k > 0; k--) stream.push(v);
    const h = sketchOf(shuffle(stream, r.u32));
    assert.equal(h.isSparse, true, `n=${n}`);
    assert.equal(h.count(), n, `n=${n}`);
    assert.equal(h.standardError, 0);
  }
  const h = sketchOf(range("exact-over-", 0, threshold + 1));
  assert.equal(h.isSparse, false);
  assert.ok(Math.abs(h.count() - (threshold + 1)) <= 3 * sigma * (threshold + 1));
  assert.equal(h.standardError, sigma);

  const odd = sketchOf(["", "", "a", "é", "😀", "\ud800", "\ufffd"]); // lone surrogate hashes as U+FFFD
  assert.equal(odd.count(), 5);
  for (const p of [4, 8, 16]) {
    const t = HyperLogLog.sparseThreshold(p);
    assert.equal(t, 2 ** p / 8);
    const s = sketchOf(range("small-", 0, t), p);
    assert.equal(s.isSparse, true);
    assert.equal(s.count(), t);
  }
});

test("accuracy: uniform distinct values within 3σ for n = 100 … 1M, and along a 1 … 1M sweep", () => {
  let worst = 0;
  for (const n of [100, 1000, 10_000, 100_000]) {
    const h = new HyperLogLog();
    for (let i = 0; i < n; i++) h.add(`uniform-${n}:${i}`);
    worst = Math.max(worst, assertWithin3Sigma(h, n, `uniform n=${n}`));
    if (n <= threshold) assert.equal(h.count(), n);
  }
  // One 1M stream, checked at geometric checkpoints (×1.25) and at 1M.
  const h = new HyperLogLog();
  let next = 1;
  for (let i = 1; i <= 1_000_000; i++) {
    h.add(`sweep:${i}`);
    if (i === next || i === 1_000_000) {
      if (i <= threshold) assert.equal(h.count(), i, `sweep n=${i}`);
      else worst = Math.max(worst, assertWithin3Sigma(h, i, `sweep n=${i}`));
      next = Math.ceil(next * 1.25);
    }
  }
  console.log(`# uniform: max relative error ${(worst * 100).toFixed(3)}% (3σ = ${(3 * sigma * 100).toFixed(3)}%)`);
});

test("accuracy: skewed (Zipf-like) streams within 3σ, distinct count from a Set", () => {
  // Ranks k in [1, n^1.5] drawn log-uniformly (P(k) ≈ 1/(k·ln U), i.e. Zipf with s ≈ 1) until n
  // distinct values were seen: the top value gets ~1/ln(U) of the stream, most of the tail once
  // (1.4 draws per distinct value at n = 100, 2 at n = 1M).
  let worst = 0;
  for (const [i, n] of [100, 1000, 10_000, 100_000, 1_000_000].entries()) {
    const r = rng(1000 + i);
    const lnUniverse = Math.log(n ** 1.5 + 1);
    const seen = new Set<number>(); // of ranks; the value `zipf<i>:<k>` is a function of k alone
    const h = new HyperLogLog();
    let draws = 0;
    while (seen.size < n) {
      const k = Math.floor(Math.exp(r.real53() * lnUniverse));
      seen.add(k);
      h.add(`zipf${i}:${k}`);
      draws++;
    }
    assert.ok(draws >= 1.3 * n, `stream should repeat values (draws ${draws}, distinct ${n})`);
    if (n <= threshold) assert.equal(h.count(), seen.size);
    else worst = Math.max(worst, assertWithin3Sigma(h, seen.size, `zipf n=${n} (${draws} draws)`));
  }
  console.log(`# zipf: max relative error ${(worst * 100).toFixed(3)}% (3σ = ${(3 * sigma * 100).toFixed(3)}%)`);
});

test("merge equals the sketch of the union, byte for byte: sparse/sparse, sparse/dense, dense/dense", () => {
  const cases: Array<[string, [number, number], [number, number], boolean, boolean, boolean]> = [
    // name, a = [from, to), b = [from, to), a sparse?, b sparse?, union sparse?
    ["sparse/sparse → sparse", [0, 500], [300, 900], true, true, true],
    ["sparse/sparse → dense", [0, 1500], [1000, 2600], true, true, false],
    ["sparse/dense", [0, 800], [500, 6000], true, false, false],
    ["dense/dense", [0, 5000], [3000, 12000], false, false, false],
    ["disjoint dense/dense", [0, 40000], [40000, 90000], false, false, false],
    ["empty/sparse", [0, 0], [0, 10], true, true, true],
    ["empty/dense", [0, 0], [0, 3000], true, false, false],
  ];
  for (const [name, [a0, a1], [b0, b1], aSparse, bSparse, uSparse] of cases) {
    const a = sketchOf(range("m-", a0, a1));
    const b = sketchOf(range("m-", b0, b1));
    assert.equal(a.isSparse, aSparse, name);
    assert.equal(b.isSparse, bSparse, name);
    const union = sketchOf(range("m-", Math.min(a0, b0), Math.max(a1, b1)));
    assert.equal(union.isSparse, uSparse, name);
    const aBytes = a.encode();
    const bBytes = b.encode();

    const ab = a.clone();
    ab.merge(b);
    const ba = b.clone();
    ba.merge(a);
    assert.deepEqual(ab.encode(), union.encode(), `${name}: a∪b`);
    assert.deepEqual(ba.encode(), union.encode(), `${name}: b∪a`);
    assert.equal(ab.count(), union.count(), name);
    assert.deepEqual(a.encode(), aBytes, `${name}: merge mutated its argument or the clone shared state`);
    assert.deepEqual(b.encode(), bBytes, `${name}: merge mutated its argument or the clone shared state`);

    ab.merge(b); // idempotent
    ab.merge(ab); // self-merge is a no-op
    assert.deepEqual(ab.encode(), union.encode(), `${name}: idempotent`);
  }
});

test("the all-zero hash (not storable in the sparse table) survives sparse, dense, merge and encode", () => {
  const zero = HyperLogLog.decode(Uint8Array.of((1 << 5) | 14, 1, 0)); // one hash: 0
  assert.equal(zero.count(), 1);
  const zeroAndFive = HyperLogLog.decode(Uint8Array.of((1 << 5) | 14, 2, 0, 5));
  assert.equal(zeroAndFive.count(), 2);
  const atThreshold = sketchOf(range("zero-", 0, threshold));
  assert.equal(atThreshold.isSparse, true);
  const a = atThreshold.clone();
  a.merge(zero); // threshold + 1 hashes: dense
  const b = zero.clone();
  b.merge(atThreshold);
  assert.equal(a.isSparse, false);
  assert.deepEqual(a.encode(), b.encode());
  assert.equal(a.encode()[1] & 0x3f, 51, "register 0 holds the maximum rank 65 - p");
  const c = zeroAndFive.clone();
  c.merge(zero);
  assert.deepEqual(c.encode(), zeroAndFive.encode());
  assert.deepEqual(HyperLogLog.decode(a.encode()).encode(), a.encode());
});

test("merge is associative and commutative (byte-identical) for every mix of representations", () => {
  const parts = {
    sparse: (tag: string) => range(`assoc-${tag}-`, 0, 700),
    dense: (tag: string) => range(`assoc-${tag}-`, 0, 7000),
  };
  const kinds = ["sparse", "dense"] as const;
  for (const ka of kinds) {
    for (const kb of kinds) {
      for (const kc of kinds) {
        const va = parts[ka]("a");
        const vb = [...parts[kb]("b"), ...va.slice(0, 300)]; // overlapping
        const vc = [...parts[kc]("c"), ...vb.slice(0, 300)];
        const [a, b, c] = [sketchOf(va), sketchOf(vb), sketchOf(vc)];
        const direct = sketchOf([...va, ...vb, ...vc]).encode();

        const left = a.clone(); // (a ∪ b) ∪ c
        left.merge(b);
        left.merge(c);
        const bc = b.clone(); // a ∪ (b ∪ c)
        bc.merge(c);
        const right = a.clone();
        right.merge(bc);
        const reversed = c.clone(); // (c ∪ b) ∪ a
        reversed.merge(b);
        reversed.merge(a);
        const name = `${ka}/${kb}/${kc}`;
        assert.deepEqual(left.encode(), direct, name);
        assert.deepEqual(right.encode(), direct, name);
        assert.deepEqual(reversed.encode(), direct, name);
      }
    }
  }
  // A sparse union that crosses the threshold only through merging many small sketches.
  const pieces = Array.from({ length: 10 }, (_, i) => sketchOf(range("piece-", i * 250, i * 250 + 400)));
  const all = new HyperLogLog();
  for (const piece of pieces) all.merge(piece);
  assert.deepEqual(all.encode(), sketchOf(range("piece-", 0, 9 * 250 + 400)).encode());
});

test("merge rejects other precisions and non-sketches", () => {
  const a = new HyperLogLog({ precision: 12 });
  assert.throws(() => a.merge(new HyperLogLog()), /precision mismatch/);
  assert.throws(() => a.merge({} as HyperLogLog), TypeError);
  for (const p of [3, 17, 14.5, Number.NaN]) assert.throws(() => new HyperLogLog({ precision: p }), RangeError);
  assert.equal(new HyperLogLog().precision, 14);
  assert.equal(HyperLogLog.relativeStandardError(), 1.04 / 128);
  assert.equal(HyperLogLog.relativeStandardError(16), 1.04 / 256);
});

test("encode/decode round-trips byte- and count-identically in both representations", () => {
  for (const p of [4, 9, 14, 16]) {
    for (const n of [0, 1, 2, 50, HyperLogLog.sparseThreshold(p), HyperLogLog.sparseThreshold(p) + 1, 20_000]) {
      const h = sketchOf(range(`rt-${p}-${n}-`, 0, n), p);
      const bytes = h.encode();
      const back = HyperLogLog.decode(bytes);
      assert.equal(back.precision, p);
      assert.equal(back.isSparse, h.isSparse);
      assert.deepEqual(back.encode(), bytes, `p=${p} n=${n}`);
      assert.equal(back.count(), h.count(), `p=${p} n=${n}`);
      if (!h.isSparse) assert.equal(bytes.length, 1 + (3 * 2 ** p) / 4);
      // The decoded sketch keeps working: adding more values matches adding them to the original.
      back.add("one more");
      h.add("one more");
      assert.deepEqual(back.encode(), h.encode());
    }
  }
  assert.deepEqual(new HyperLogLog().encode(), Uint8Array.of((1 << 5) | 14, 0));
  const sparse = sketchOf(range("size-", 0, threshold));
  // At the threshold a sparse encoding (~8 bytes per hash) is ~1.3x the 12,289-byte dense one.
  assert.ok(sparse.isSparse && sparse.encode().length < 1.5 * (1 + (3 * 2 ** 14) / 4));
});

test("decode throws an Error on garbage, truncation and corruption, and accepts only canonical bytes", () => {
  const sparse = sketchOf(range("bad-", 0, 300)).encode();
  const dense = sketchOf(range("bad-", 0, 5000)).encode();

  for (let len = 0; len < sparse.length; len++) assertDecodeError(sparse.subarray(0, len), `sparse prefix ${len}`);
  for (let len = 0; len < dense.length; len += 97) assertDecodeError(dense.subarray(0, len), `dense prefix ${len}`);
  assertDecodeError(dense.subarray(0, dense.length - 1), "dense minus one byte");
  assertDecodeError(Uint8Array.of(...sparse, 0), "sparse + trailing byte");
  assertDecodeError(Uint8Array.of(...dense, 0), "dense + trailing byte");

  for (const v of [undefined, null, "abc", 42, [0x2e, 0], new ArrayBuffer(2), { length: 2 }]) {
    assertDecodeError(v, `non-bytes ${String(v)}`);
  }
  assertDecodeError(Uint8Array.of(0x2e, 0x80), "count varint cut short");
  assertDecodeError(Uint8Array.of(0x2e, 0x80, 0x00), "non-minimal count varint");
  assertDecodeError(Uint8Array.of(0x2e, 0x81, 0x10), "count above m/8");
  assertDecodeError(Uint8Array.of(0x2e, 2, 5, 0), "duplicate hash");
  assertDecodeError(Uint8Array.of(0x2e, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02), "hash > 64 bits");
  assertDecodeError(Uint8Array.of(0x2e, 2, ...Array(9).fill(0xff), 0x01, 1), "sum of deltas > 64 bits");
  assertDecodeError(Uint8Array.of(0x23, 0), "precision 3");
  assertDecodeError(Uint8Array.of(0x31, 0), "precision 17");
  assertDecodeError(Uint8Array.of(0x0e, 0), "format 0");
  assertDecodeError(Uint8Array.of(0x6e, 0), "format 3");
  const badRegister = dense.slice();
  badRegister[1] = 63; // register 0 = 63 > 51
  assertDecodeError(badRegister, "register above the maximum rank");
  // The largest 64-bit hash alone is fine.
  decodeOrError(Uint8Array.of(0x2e, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), "max hash");
  assert.equal(HyperLogLog.decode(Uint8Array.of(0x2e, 1, ...Array(9).fill(0xff), 0x01)).count(), 1);

  const r = rng(99);
  for (let i = 0; i < 3000; i++) {
    const bytes = new Uint8Array(r.u32() % 48);
    for (let j = 0; j < bytes.length; j++) bytes[j] = r.u32() & 0xff;
    if (bytes.length > 0 && i % 2 === 0) bytes[0] = [0x2e, 0x24, 0x30, 0x4e, 0x44][i % 5];
    decodeOrError(bytes, `random #${i}`);
  }
  for (let i = 0; i < 400; i++) {
    const source = i % 2 === 0 ? sparse : dense;
    const bytes = source.slice();
    const at = r.u32() % Math.min(bytes.length, 600);
    bytes[at] ^= 1 << (r.u32() % 8);
    decodeOrError(bytes, `bit flip #${i} at ${at}`);
  }
});

/**
 * HyperLogLog distinct-count sketch for `distinct:<field>` aggregates: a mergeable, serialisable
 * commutative monoid (`merge` is associative, commutative and idempotent; `new HyperLogLog()` is
 * its identity).
 *
 * Canonical state. A sketch is a pure function of the *set* of 64-bit hashes added to it:
 *  - sparse: while at most `sparseThreshold(p) = m/8` distinct hashes were seen, the exact hashes are
 *    kept (an open-addressing table of (hi, lo) 32-bit halves) and `count()` is exact (up to 64-bit
 *    hash collisions, probability < n²/2⁶⁵, i.e. < 1e-10 for n = 2048);
 *  - dense: once more than m/8 distinct hashes were seen, m = 2^p one-byte registers (Uint8Array(m)),
 *    register[i] = max rank over the hashes whose index is i.
 * Because the sparse → dense switch depends only on the number of distinct hashes, and a dense
 * sketch's registers depend only on the set, `a.merge(b)` yields exactly the state (and the
 * `encode()` bytes) of a sketch that was fed a ∪ b directly, whatever the representations of a and b.
 *
 * Hash. MurmurHash3_x86_128 (Austin Appleby's public-domain reference, 32-bit arithmetic only, so
 * plain `Math.imul`, no BigInt) of the value's UTF-8 bytes with seed `HASH_SEED` (0x9e3779b9; a
 * non-zero seed so that the empty string does not hash to 0). The sketch uses the first 64 bits of the
 * digest: h1 (high 32 bits) then h2 (low 32 bits), i.e. hash = h1·2³² + h2. Lone surrogates are
 * encoded as U+FFFD, exactly as `Buffer.from(value, "utf8")` / `TextEncoder` do. The result is
 * deterministic across processes and machines, and reproducible with any standard MurmurHash3
 * library (e.g. the first two 32-bit little-endian words of `mmh3.hash_bytes(utf8, seed,
 * x64arch=False)` in Python). The implementation is checked against SMHasher's verification value.
 *
 * Register index and rank. index = top p bits of the hash; rank = (number of leading zeros of the
 * remaining q = 64 − p bits) + 1, so ranks are 1..q+1 (q+1 when all q bits are 0) and 0 means empty.
 * Computed on the two 32-bit halves with `Math.clz32`.
 *
 * Estimator. Dense sketches use Otmar Ertl's "improved raw estimator" (Ertl 2017, "New cardinality
 * estimation algorithms for HyperLogLog sketches", arXiv:1702.01284, Algorithm 6): from the register
 * histogram C[0..q+1], z = m·τ(1 − C[q+1]/m), then z = (z + C[k])/2 for k = q..1, then
 * z += m·σ(C[0]/m), estimate = α∞·m²/z with α∞ = 1/(2 ln 2). It needs no empirical bias tables and is
 * nearly unbiased over the whole range: its σ term reduces to linear counting at small cardinalities
 * (which is what HLL++ switches to) and it stays unbiased through the linear-counting/raw-estimate
 * transition where the classic estimator is biased. Relative standard error ≈ 1.04/√m
 * (`relativeStandardError(p)`; 0.81% for p = 14).
 *
 * Binary format (`encode()`/`decode()`), byte 0 = (format << 5) | p:
 *  - format 1, sparse: varint n (0 ≤ n ≤ m/8), then the n hashes sorted ascending as unsigned 64-bit
 *    integers, each written as the LEB128 varint of its difference to the previous one (the first
 *    relative to 0; later differences are > 0). Varints must be minimal (no redundant 0x80 … 0x00).
 *  - format 2, dense: the m registers packed 6 bits each, 4 registers per 3 bytes, little-endian
 *    (r0 | r1<<6 | r2<<12 | r3<<18), so exactly 1 + 3m/4 bytes (12,289 for p = 14). Every register
 *    must be ≤ q + 1.
 * `decode` accepts exactly the canonical encodings (so `encode(decode(bytes))` equals `bytes`
 * whenever decode succeeds) and throws an `Error` naming the problem otherwise.
 *
 * Cost. `add()` encodes into a shared scratch buffer and hashes without allocating; on the dense path
 * it is hash + one register compare. Sparse memory is at most 2·m bytes (table of ≤ m/4 slots of
 * 8 bytes at load ≤ 1/2) just before switching to the m-byte dense registers.
 */

const MIN_P = 4;
const MAX_P = 16;
const DEFAULT_P = 14;
const HASH_SEED = 0x9e3779b9;
const FORMAT_SPARSE = 1;
const FORMAT_DENSE = 2;
const ALPHA_INF = 1 / (2 * Math.LN2);
const TWO_POW_32 = 4294967296;

// ---------------------------------------------------------------------------------------------
// Hashing: UTF-8 into a shared scratch buffer, then MurmurHash3_x86_128 into module-level words.

let scratch = new Uint8Array(1024);
// Result of the last murmur3 call (signed 32-bit values).
let out1 = 0;
let out2 = 0;
let out3 = 0;
let out4 = 0;

/** UTF-8-encodes `s` into `scratch` (growing it if needed) and returns the byte length. */
function utf8IntoScratch(s: string): number {
  const n = s.length;
  if (n * 3 > scratch.length) scratch = new Uint8Array(Math.max(n * 3, scratch.length * 2));
  const b = scratch;
  let j = 0;
  for (let i = 0; i < n; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      b[j++] = c;
    } else if (c < 0x800) {
      b[j++] = 0xc0 | (c >>> 6);
      b[j++] = 0x80 | (c & 0x3f);
    } else {
      if (c >= 0xd800 && c <= 0xdfff) {
        if (c <= 0xdbff && i + 1 < n) {
          const d = s.charCodeAt(i + 1);
          if (d >= 0xdc00 && d <= 0xdfff) {
            const cp = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
            b[j++] = 0xf0 | (cp >>> 18);
            b[j++] = 0x80 | ((cp >>> 12) & 0x3f);
            b[j++] = 0x80 | ((cp >>> 6) & 0x3f);
            b[j++] = 0x80 | (cp & 0x3f);
            i++;
            continue;
          }
        }
        c = 0xfffd; // lone surrogate
      }
      b[j++] = 0xe0 | (c >>> 12);
      b[j++] = 0x80 | ((c >>> 6) & 0x3f);
      b[j++] = 0x80 | (c & 0x3f);
    }
  }
  return j;
}

const C1 = 0x239b961b;
const C2 = 0xab0e9789;
const C3 = 0x38b34ae5;
const C4 = 0xa1e38b93;

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/** MurmurHash3_x86_128 of b[0..len) with `seed`; the four digest words land in out1..out4. */
function murmur3x86_128(b: Uint8Array, len: number, seed: number): void {
  let h1 = seed | 0;
  let h2 = h1;
  let h3 = h1;
  let h4 = h1;
  const blocksEnd = len & ~15;
  let i = 0;
  let k1: number;
  let k2: number;
  let k3: number;
  let k4: number;
  for (; i < blocksEnd; i += 16) {
    k1 = b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24);
    k2 = b[i + 4] | (b[i + 5] << 8) | (b[i + 6] << 16) | (b[i + 7] << 24);
    k3 = b[i + 8] | (b[i + 9] << 8) | (b[i + 10] << 16) | (b[i + 11] << 24);
    k4 = b[i + 12] | (b[i + 13] << 8) | (b[i + 14] << 16) | (b[i + 15] << 24);

    k1 = Math.imul(k1, C1);
    k1 = (k1 << 15) | (k1 >>> 17);
    k1 = Math.imul(k1, C2);
    h1 ^= k1;
    h1 = (h1 << 19) | (h1 >>> 13);
    h1 = (h1 + h2) | 0;
    h1 = (Math.imul(h1, 5) + 0x561ccd1b) | 0;

    k2 = Math.imul(k2, C2);
    k2 = (k2 << 16) | (k2 >>> 16);
    k2 = Math.imul(k2, C3);
    h2 ^= k2;
    h2 = (h2 << 17) | (h2 >>> 15);
    h2 = (h2 + h3) | 0;
    h2 = (Math.imul(h2, 5) + 0x0bcaa747) | 0;

    k3 = Math.imul(k3, C3);
    k3 = (k3 << 17) | (k3 >>> 15);
    k3 = Math.imul(k3, C4);
    h3 ^= k3;
    h3 = (h3 << 15) | (h3 >>> 17);
    h3 = (h3 + h4) | 0;
    h3 = (Math.imul(h3, 5) + 0x96cd1c35) | 0;

    k4 = Math.imul(k4, C4);
    k4 = (k4 << 18) | (k4 >>> 14);
    k4 = Math.imul(k4, C1);
    h4 ^= k4;
    h4 = (h4 << 13) | (h4 >>> 19);
    h4 = (h4 + h1) | 0;
    h4 = (Math.imul(h4, 5) + 0x32ac3b17) | 0;
  }

  const rem = len & 15;
  if (rem > 12) {
    k4 = b[i + 12];
    if (rem > 13) k4 |= b[i + 13] << 8;
    if (rem > 14) k4 |= b[i + 14] << 16;
    k4 = Math.imul(k4, C4);
    k4 = (k4 << 18) | (k4 >>> 14);
    k4 = Math.imul(k4, C1);
    h4 ^= k4;
  }
  if (rem > 8) {
    k3 = b[i + 8];
    if (rem > 9) k3 |= b[i + 9] << 8;
    if (rem > 10) k3 |= b[i + 10] << 16;
    if (rem > 11) k3 |= b[i + 11] << 24;
    k3 = Math.imul(k3, C3);
    k3 = (k3 << 17) | (k3 >>> 15);
    k3 = Math.imul(k3, C4);
    h3 ^= k3;
  }
  if (rem > 4) {
    k2 = b[i + 4];
    if (rem > 5) k2 |= b[i + 5] << 8;
    if (rem > 6) k2 |= b[i + 6] << 16;
    if (rem > 7) k2 |= b[i + 7] << 24;
    k2 = Math.imul(k2, C2);
    k2 = (k2 << 16) | (k2 >>> 16);
    k2 = Math.imul(k2, C3);
    h2 ^= k2;
  }
  if (rem > 0) {
    k1 = b[i];
    if (rem > 1) k1 |= b[i + 1] << 8;
    if (rem > 2) k1 |= b[i + 2] << 16;
    if (rem > 3) k1 |= b[i + 3] << 24;
    k1 = Math.imul(k1, C1);
    k1 = (k1 << 15) | (k1 >>> 17);
    k1 = Math.imul(k1, C2);
    h1 ^= k1;
  }

  h1 ^= len;
  h2 ^= len;
  h3 ^= len;
  h4 ^= len;
  h1 = (h1 + h2 + h3 + h4) | 0;
  h2 = (h2 + h1) | 0;
  h3 = (h3 + h1) | 0;
  h4 = (h4 + h1) | 0;
  h1 = fmix32(h1);
  h2 = fmix32(h2);
  h3 = fmix32(h3);
  h4 = fmix32(h4);
  h1 = (h1 + h2 + h3 + h4) | 0;
  h2 = (h2 + h1) | 0;
  h3 = (h3 + h1) | 0;
  h4 = (h4 + h1) | 0;
  out1 = h1;
  out2 = h2;
  out3 = h3;
  out4 = h4;
}

/**
 * MurmurHash3_x86_128 of `bytes` (the reference algorithm; exported for interop checks and tests).
 * Returns the digest as four unsigned 32-bit words h1..h4 (the digest bytes are each word, little-endian).
 */
export function murmurHash3x86_128(bytes: Uint8Array, seed = 0): [number, number, number, number] {
  murmur3x86_128(bytes, bytes.length, seed);
  return [out1 >>> 0, out2 >>> 0, out3 >>> 0, out4 >>> 0];
}

// ---------------------------------------------------------------------------------------------
// Estimator helpers (Ertl 2017, Algorithms 6-8).

function sigma(x: number): number {
  if (x === 1) return Infinity;
  let y = 1;
  let z = x;
  let zPrev: number;
  do {
    x *= x;
    zPrev = z;
    z += x * y;
    y += y;
  } while (z !== zPrev);
  return z;
}

function tau(x: number): number {
  if (x === 0 || x === 1) return 0;
  let y = 1;
  let z = 1 - x;
  let zPrev: number;
  do {
    x = Math.sqrt(x);
    zPrev = z;
    y *= 0.5;
    const d = 1 - x;
    z -= d * d * y;
  } while (z !== zPrev);
  return z / 3;
}

// ---------------------------------------------------------------------------------------------
// Decoding helpers.

function malformed(reason: string): Error {
  return new Error(`HyperLogLog.decode: malformed sketch: ${reason}`);
}

// Result of the last readVarint64 (unsigned 32-bit halves).
let varHi = 0;
let varLo = 0;

/** Reads a minimal LEB128 varint of at most 64 bits at `pos`; returns the position after it. */
function readVarint64(bytes: Uint8Array, pos: number): number {
  let hi = 0;
  let lo = 0;
  for (let i = 0; ; i++) {
    if (pos >= bytes.length) throw malformed("truncated (varint runs past the end)");
    const byte = bytes[pos++];
    const bits = byte & 0x7f;
    if (i < 4) {
      lo |= bits << (7 * i);
    } else if (i === 4) {
      lo |= bits << 28;
      hi |= bits >>> 4;
    } else if (i < 9) {
      hi |= bits << (7 * i - 32);
    } else {
      if (bits > 1 || byte & 0x80) throw malformed("varint exceeds 64 bits");
      hi |= bits << 31;
    }
    if ((byte & 0x80) === 0) {
      if (byte === 0 && i > 0) throw malformed("non-minimal varint");
      break;
    }
  }
  varHi = hi >>> 0;
  varLo = lo >>> 0;
  return pos;
}

function checkPrecision(precision: number): void {
  if (!Number.isInteger(precision) || precision < MIN_P || precision > MAX_P) {
    throw new RangeError(`HyperLogLog precision must be an integer in ${MIN_P}..${MAX_P}, got ${precision}`);
  }
}

// ---------------------------------------------------------------------------------------------

export interface HyperLogLogOptions {
  /** Number of index bits p (m = 2^p registers), an integer in 4..16; default 14. */
  precision?: number;
}

export class HyperLogLog {
  static readonly DEFAULT_PRECISION = DEFAULT_P;
  static readonly MIN_PRECISION = MIN_P;
  static readonly MAX_PRECISION = MAX_P;
  /** Seed of the MurmurHash3_x86_128 value hash. Part of the format: never change it. */
  static readonly HASH_SEED = HASH_SEED;

  /** Relative standard error 1.04/√m of a dense estimate with precision p (0.0081 for p = 14). */
  static relativeStandardError(precision: number = DEFAULT_P): number {
    checkPrecision(precision);
    return 1.04 / Math.sqrt(2 ** precision);
  }

  /** The largest number of distinct hashes kept exactly (sparse) at precision p: m/8. */
  static sparseThreshold(precision: number = DEFAULT_P): number {
    checkPrecision(precision);
    return 2 ** precision / 8;
  }

  /** The 64-bit hash the sketch uses for `value` (h1·2³² + h2 of MurmurHash3_x86_128, see above). */
  static hashValue(value: string): bigint {
    const len = utf8IntoScratch(value); // before reading `scratch`: it may grow
    murmur3x86_128(scratch, len, HASH_SEED);
    return (BigInt(out1 >>> 0) << 32n) | BigInt(out2 >>> 0);
  }

  /** Number of index bits p. */
  readonly precision: number;
  private readonly m: number;
  private readonly threshold: number;
  /** Sparse: open-addressing table of (hi, lo) pairs, (0, 0) = empty slot; null once dense. */
  private table: Int32Array | null;
  private tableMask: number;
  private tableSize: number;
  /** Sparse: whether the all-zero hash (which cannot live in the table) was added. */
  private hasZero: boolean;
  /** Dense: the m registers; null while sparse. */
  private registers: Uint8Array | null;
  /** Cached dense estimate; NaN when stale. */
  private cachedEstimate: number;

  constructor(options: HyperLogLogOptions = {}) {
    const precision = options.precision ?? DEFAULT_P;
    checkPrecision(precision);
    this.precision = precision;
    this.m = 2 ** precision;
    this.threshold = this.m / 8;
    this.table = new Int32Array(16); // 8 slots
    this.tableMask = 7;
    this.tableSize = 0;
    this.hasZero = false;
    this.registers = null;
    this.cachedEstimate = NaN;
  }

  /** Whether the sketch still holds exact hashes (count() is then exact). */
  get isSparse(): boolean {
    return this.registers === null;
  }

  /** Relative standard error of this sketch's estimate (0 while sparse: the count is exact). */
  get standardError(): number {
    return this.registers === null ? 0 : 1.04 / Math.sqrt(this.m);
  }

  /** Adds one value (a string; callers stringify numbers etc. consistently themselves). */
  add(value: string): void {
    const len = utf8IntoScratch(value); // before reading `scratch`: it may grow
    murmur3x86_128(scratch, len, HASH_SEED);
    this.addHash(out1, out2);
  }

  /**
   * Folds `other` into this sketch (this := this ∪ other); `other` is not modified. Both must have
   * the same precision. Commutative, associative and idempotent, and the result is byte-identical
   * to the sketch of the union.
   */
  merge(other: HyperLogLog): void {
    if (!(other instanceof HyperLogLog)) throw new TypeError("HyperLogLog.merge: argument is not a HyperLogLog");
    if (other.precision !== this.precision) {
      throw new Error(`HyperLogLog.merge: precision mismatch (${this.precision} vs ${other.precision})`);
    }
    if (other === this) return;
    const from = other.registers;
    if (from !== null) {
      // Other has > m/8 distinct hashes, so the union does too: dense.
      if (this.registers === null) this.toDense();
      const into = this.registers!;
      let changed = false;
      for (let i = 0; i < into.length; i++) {
        if (from[i] > into[i]) {
          into[i] = from[i];
          changed = true;
        }
      }
      if (changed) this.cachedEstimate = NaN;
      return;
    }
    const t = other.table!;
    for (let s = 0; s < t.length; s += 2) {
      const hi = t[s];
      const lo = t[s + 1];
      if ((hi | lo) !== 0) this.addHash(hi, lo);
    }
    if (other.hasZero) this.addHash(0, 0);
  }

  /** The cardinality estimate, unrounded (exact while sparse). */
  estimate(): number {
    const regs = this.registers;
    if (regs === null) return this.tableSize + (this.hasZero ? 1 : 0);
    if (Number.isNaN(this.cachedEstimate)) this.cachedEstimate = this.estimateDense(regs);
    return this.cachedEstimate;
  }

  /** The estimated number of distinct values added, rounded (exact while sparse). */
  count(): number {
    return Math.round(this.estimate());
  }

  /** An independent copy. */
  clone(): HyperLogLog {
    const copy = new HyperLogLog({ precision: this.precision });
    copy.table = this.table === null ? null : this.table.slice();
    copy.tableMask = this.tableMask;
    copy.tableSize = this.tableSize;
    copy.hasZero = this.hasZero;
    copy.registers = this.registers === null ? null : this.registers.slice();
    copy.cachedEstimate = this.cachedEstimate;
    return copy;
  }

  /** The canonical binary form (see the format description at the top of this file). */
  encode(): Uint8Array {
    const p = this.precision;
    const regs = this.registers;
    if (regs !== null) {
      const out = new Uint8Array(1 + (this.m / 4) * 3);
      out[0] = (FORMAT_DENSE << 5) | p;
      let pos = 1;
      for (let i = 0; i < regs.length; i += 4) {
        const v = regs[i] | (regs[i + 1] << 6) | (regs[i + 2] << 12) | (regs[i + 3] << 18);
        out[pos++] = v & 0xff;
        out[pos++] = (v >>> 8) & 0xff;
        out[pos++] = v >>> 16;
      }
      return out;
    }

    const n = this.tableSize + (this.hasZero ? 1 : 0);
    const keys = new BigUint64Array(n);
    let k = 0;
    if (this.hasZero) keys[k++] = 0n;
    const t = this.table!;
    for (let s = 0; s < t.length; s += 2) {
      const hi = t[s];
      const lo = t[s + 1];
      if ((hi | lo) !== 0) keys[k++] = (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
    }
    keys.sort();

    const out = new Uint8Array(1 + 5 + 10 * n);
    out[0] = (FORMAT_SPARSE << 5) | p;
    let pos = 1;
    let c = n;
    while (c > 0x7f) {
      out[pos++] = (c & 0x7f) | 0x80;
      c >>>= 7;
    }
    out[pos++] = c;
    let prevHi = 0;
    let prevLo = 0;
    for (let i = 0; i < n; i++) {
      const key = keys[i];
      const hi = Number(key >> 32n);
      const lo = Number(key & 0xffffffffn);
      // 64-bit difference (key - prev) on 32-bit halves.
      let dLo = lo - prevLo;
      let dHi = hi - prevHi;
      if (dLo < 0) {
        dLo += TWO_POW_32;
        dHi -= 1;
      }
      prevHi = hi;
      prevLo = lo;
      while (dHi !== 0 || dLo > 0x7f) {
        out[pos++] = (dLo & 0x7f) | 0x80;
        dLo = ((dLo >>> 7) | (dHi << 25)) >>> 0;
        dHi >>>= 7;
      }
      out[pos++] = dLo;
    }
    return out.slice(0, pos);
  }

  /**
   * Parses `encode()` output. Accepts exactly the canonical encodings and throws an Error describing
   * the problem for anything else (wrong type, unknown format/precision, truncation, trailing bytes,
   * out-of-range registers, unsorted/duplicate/overflowing hashes, non-minimal varints).
   */
  static decode(bytes: Uint8Array): HyperLogLog {
    if (!(bytes instanceof Uint8Array)) throw new Error("HyperLogLog.decode: expected a Uint8Array");
    if (bytes.length === 0) throw malformed("empty input");
    const header = bytes[0];
    const format = header >>> 5;
    const p = header & 0x1f;
    if (p < MIN_P || p > MAX_P) throw malformed(`precision ${p} is outside ${MIN_P}..${MAX_P}`);
    const sketch = new HyperLogLog({ precision: p });
    const m = sketch.m;

    if (format === FORMAT_DENSE) {
      const expected = 1 + (m / 4) * 3;
      if (bytes.length !== expected) {
        throw malformed(`dense p=${p} sketch must be ${expected} bytes, got ${bytes.length}`);
      }
      const maxRank = 65 - p;
      const regs = new Uint8Array(m);
      let pos = 1;
      for (let i = 0; i < m; i += 4) {
        const v = bytes[pos] | (bytes[pos + 1] << 8) | (bytes[pos + 2] << 16);
        pos += 3;
        const r0 = v & 0x3f;
        const r1 = (v >>> 6) & 0x3f;
        const r2 = (v >>> 12) & 0x3f;
        const r3 = v >>> 18;
        if (r0 > maxRank || r1 > maxRank || r2 > maxRank || r3 > maxRank) {
          throw malformed(`register ${i}..${i + 3} exceeds the maximum rank ${maxRank} for p=${p}`);
        }
        regs[i] = r0;
        regs[i + 1] = r1;
        regs[i + 2] = r2;
        regs[i + 3] = r3;
      }
      sketch.table = null;
      sketch.tableMask = 0;
      sketch.registers = regs;
      return sketch;
    }

    if (format !== FORMAT_SPARSE) throw malformed(`unknown format ${format}`);
    let pos = readVarint64(bytes, 1);
    if (varHi !== 0 || varLo > sketch.threshold) {
      throw malformed(`sparse p=${p} sketch may hold at most ${sketch.threshold} hashes`);
    }
    const n = varLo;
    if (n > bytes.length - pos) throw malformed(`truncated (${n} hashes announced, ${bytes.length - pos} bytes left)`);
    let hi = 0;
    let lo = 0;
    for (let i = 0; i < n; i++) {
      pos = readVarint64(bytes, pos);
      if (i > 0 && varHi === 0 && varLo === 0) throw malformed("duplicate hash (zero delta)");
      lo += varLo;
      hi += varHi;
      if (lo >= TWO_POW_32) {
        lo -= TWO_POW_32;
        hi += 1;
      }
      if (hi >= TWO_POW_32) throw malformed("hash exceeds 64 bits");
      sketch.addHash(hi | 0, lo | 0);
    }
    if (pos !== bytes.length) throw malformed(`${bytes.length - pos} trailing bytes`);
    return sketch;
  }

  // -------------------------------------------------------------------------------------------

  /** Adds one 64-bit hash given as signed 32-bit halves. */
  private addHash(hi: number, lo: number): void {
    const regs = this.registers;
    if (regs !== null) {
      const p = this.precision;
      const idx = hi >>> (32 - p);
      const w = hi << p; // the 32 - p hash bits after the index, left-aligned
      const rank = w !== 0 ? Math.clz32(w) + 1 : 33 - p + Math.clz32(lo);
      if (rank > regs[idx]) {
        regs[idx] = rank;
        this.cachedEstimate = NaN;
      }
      return;
    }
    if ((hi | lo) === 0) {
      if (this.hasZero) return;
      this.hasZero = true;
    } else {
      const t = this.table!;
      const mask = this.tableMask;
      let s = lo & mask;
      for (;;) {
        const th = t[2 * s];
        const tl = t[2 * s + 1];
        if ((th | tl) === 0) break;
        if (th === hi && tl === lo) return;
        s = (s + 1) & mask;
      }
      t[2 * s] = hi;
      t[2 * s + 1] = lo;
      this.tableSize++;
    }
    if (this.tableSize + (this.hasZero ? 1 : 0) > this.threshold) {
      this.toDense();
    } else if (this.tableSize * 2 > this.tableMask + 1) {
      this.growTable();
    }
  }

  private growTable(): void {
    const old = this.table!;
    const slots = (this.tableMask + 1) * 2;
    const mask = slots - 1;
    const t = new Int32Array(slots * 2);
    for (let s = 0; s < old.length; s += 2) {
      const hi = old[s];
      const lo = old[s + 1];
      if ((hi | lo) === 0) continue;
      let d = lo & mask;
      while ((t[2 * d] | t[2 * d + 1]) !== 0) d = (d + 1) & mask;
      t[2 * d] = hi;
      t[2 * d + 1] = lo;
    }
    this.table = t;
    this.tableMask = mask;
  }

  private toDense(): void {
    const t = this.table!;
    const hadZero = this.hasZero;
    this.registers = new Uint8Array(this.m);
    this.table = null;
    this.tableMask = 0;
    this.tableSize = 0;
    this.hasZero = false;
    this.cachedEstimate = NaN;
    for (let s = 0; s < t.length; s += 2) {
      const hi = t[s];
      const lo = t[s + 1];
      if ((hi | lo) !== 0) this.addHash(hi, lo);
    }
    if (hadZero) this.addHash(0, 0);
  }

  private estimateDense(regs: Uint8Array): number {
    const m = this.m;
    const q = 64 - this.precision;
    const hist = new Float64Array(q + 2);
    for (let i = 0; i < regs.length; i++) hist[regs[i]]++;
    let z = m * tau(1 - hist[q + 1] / m);
    for (let k = q; k >= 1; k--) z = 0.5 * (z + hist[k]);
    z += m * sigma(hist[0] / m);
    return (ALPHA_INF * m * m) / z;
  }
}

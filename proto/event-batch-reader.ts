import { decodeAscii } from "../actors/event-columns.js";
import type { EventBatch } from "./gen/tally_pb.js";

/**
 * Reads the wire format of `tally.v1.EventBatch` (tally.proto) into plain columns, by hand.
 *
 * Why not `fromBinary(EventBatchSchema, …)`: it is reflective and makes a BigInt per event for
 * the sint64 `ts` column; decoding was a third of the router's CPU (bench/ingest-micro.ts). This
 * reader knows the one message, keeps timestamps as numbers when they fit in a double exactly
 * (a BigInt only beyond 2^53, so range checks stay exact).
 * It accepts what any proto3 parser must: packed or unpacked repeated scalars, fields in any
 * order or repeated, unknown fields (skipped). Encoding stays with protobuf-es (`codec.ts`).
 */
/** The generated message's columns (so the two cannot drift apart), except `ts`. */
export type EventBatchColumns = Omit<EventBatch, "$typeName" | "ts"> & {
  /** ts[0] absolute, ts[i] the offset from it; a bigint only when outside ±(2^53 − 1). */
  ts: (number | bigint)[];
};

/** A growable column of numbers in a typed array, reused batch after batch (no garbage per batch). */
export class Column<T extends Uint32Array | Float64Array> {
  length = 0;

  constructor(public data: T) {}

  push(value: number): void {
    if (this.length === this.data.length) {
      const next = new (this.data.constructor as new (n: number) => T)(2 * this.data.length);
      next.set(this.data);
      this.data = next;
    }
    this.data[this.length++] = value;
  }

  toArray(): number[] {
    return Array.from(this.data.subarray(0, this.length));
  }
}

export type UintColumn = Column<Uint32Array>;
export type FloatColumn = Column<Float64Array>;

/**
 * A batch's columns as a router reads them: ids, sources and kinds left in the bytes as
 * `[start, end)` pairs (it fingerprints ids where they lie and decodes a source only when a rule
 * reads it), numbers in typed arrays. `ts` holds NaN where the value needs a bigint (`tsBig`).
 */
export interface EventBatchScan {
  ids: UintColumn;
  ts: FloatColumn;
  tsBig: Map<number, bigint>;
  sources: UintColumn;
  kinds: UintColumn;
  dict: string[];
  tagCounts: UintColumn;
  tags: UintColumn;
  valueCounts: UintColumn;
  valueNames: UintColumn;
  values: FloatColumn;
}

export function emptyScan(): EventBatchScan {
  const u = (): UintColumn => new Column(new Uint32Array(1024));
  const f = (): FloatColumn => new Column(new Float64Array(1024));
  return { ids: u(), ts: f(), tsBig: new Map(), sources: u(), kinds: u(), dict: [], tagCounts: u(), tags: u(), valueCounts: u(), valueNames: u(), values: f() };
}

/** Throws an Error whose message says what is wrong with the bytes. */
export function readEventBatch(bytes: Uint8Array): EventBatchColumns {
  const scan = scanEventBatch(bytes, emptyScan());
  const strings = (ranges: UintColumn) => {
    const out: string[] = new Array(ranges.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = decodeAscii(bytes, ranges.data[2 * i]!, ranges.data[2 * i + 1]!);
    return out;
  };
  return {
    ids: strings(scan.ids),
    ts: scan.ts.toArray().map((t, i) => scan.tsBig.get(i) ?? t),
    sources: strings(scan.sources),
    kinds: strings(scan.kinds),
    dict: [...scan.dict],
    tagCounts: scan.tagCounts.toArray(),
    tags: scan.tags.toArray(),
    valueCounts: scan.valueCounts.toArray(),
    valueNames: scan.valueNames.toArray(),
    values: scan.values.toArray(),
  };
}

/** Reads `bytes` into `out` (whose columns it empties first, so one can be reused). Throws like `readEventBatch`. */
export function scanEventBatch(bytes: Uint8Array, out: EventBatchScan): EventBatchScan {
  out.ids.length = out.ts.length = out.sources.length = out.kinds.length = out.dict.length = 0;
  out.tagCounts.length = out.tags.length = out.valueCounts.length = out.valueNames.length = out.values.length = 0;
  out.tsBig.clear();
  const r = new WireReader(bytes);
  while (r.pos < r.end) {
    const key = r.uint32();
    const field = key >>> 3;
    const wire = key & 7;
    switch (field) {
      case 1:
        r.range(wire, out.ids);
        break;
      case 2:
        r.sint64s(wire, out.ts, out.tsBig);
        break;
      case 3:
        r.range(wire, out.sources);
        break;
      case 4:
        r.range(wire, out.kinds);
        break;
      case 5:
        out.dict.push(r.string(wire));
        break;
      case 6:
        r.uint32s(wire, out.tagCounts);
        break;
      case 7:
        r.uint32s(wire, out.tags);
        break;
      case 8:
        r.uint32s(wire, out.valueCounts);
        break;
      case 9:
        r.uint32s(wire, out.valueNames);
        break;
      case 10:
        r.doubles(wire, out.values);
        break;
      default:
        if (field === 0) throw new Error(`field number 0 at byte ${r.pos}`);
        r.skip(wire);
    }
  }
  return out;
}

const Wire = { Varint: 0, Fixed64: 1, Bytes: 2, Fixed32: 5 } as const;

class WireReader {
  pos = 0;
  end: number;
  private view: DataView;

  constructor(private readonly buf: Uint8Array) {
    this.end = buf.length;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  // Repeated scalars come packed (one length-delimited run) or one element per field occurrence.
  // One method per element type rather than one taking a reader callback: a call through a
  // closure per element cost ~10% of decoding in the profile.
  uint32s(wire: number, into: UintColumn): void {
    if (wire === Wire.Varint) return void into.push(this.uint32());
    const outer = this.packed(wire, Wire.Varint);
    // Counts and dictionary indices are mostly below 128: one byte, read inline.
    const { buf, end } = this;
    let pos = this.pos;
    while (pos < end) {
      const b = buf[pos]!;
      if (b < 0x80) {
        into.push(b);
        pos++;
        continue;
      }
      this.pos = pos;
      into.push(this.uint32());
      pos = this.pos;
    }
    this.pos = pos;
    this.end = outer;
  }

  sint64s(wire: number, into: FloatColumn, big: Map<number, bigint>): void {
    if (wire === Wire.Varint) return this.sint64Into(into, big);
    const outer = this.packed(wire, Wire.Varint);
    while (this.pos < this.end) this.sint64Into(into, big);
    this.end = outer;
  }

  private sint64Into(into: FloatColumn, big: Map<number, bigint>): void {
    const value = this.sint64();
    if (typeof value === "number") return into.push(value);
    big.set(into.length, value);
    into.push(NaN);
  }

  doubles(wire: number, into: FloatColumn): void {
    if (wire === Wire.Fixed64) return void into.push(this.double());
    const outer = this.packed(wire, Wire.Fixed64);
    while (this.pos < this.end) into.push(this.double());
    this.end = outer;
  }

  /** Enters a packed run: reads stop at its end (an element crossing it fails); returns the outer end. */
  private packed(wire: number, elementWire: number): number {
    if (wire !== Wire.Bytes) throw new Error(`wire type ${wire} for a repeated field of wire type ${elementWire}`);
    const outer = this.end;
    this.end = this.lengthEnd();
    return outer;
  }

  string(wire: number): string {
    const end = this.bytesEnd(wire);
    const start = this.pos;
    this.pos = end;
    return decodeAscii(this.buf, start, end);
  }

  /** A length-delimited field's content as a `[start, end)` pair pushed onto `into`. */
  range(wire: number, into: UintColumn): void {
    const end = this.bytesEnd(wire);
    into.push(this.pos);
    into.push(end);
    this.pos = end;
  }

  double(): number {
    if (this.pos + 8 > this.end) throw new Error("premature end of a double");
    const v = this.view.getFloat64(this.pos, true);
    this.pos += 8;
    return v;
  }

  /** A varint's low 32 bits, unsigned (what a uint32 field keeps of a longer varint). */
  uint32(): number {
    let value = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      const b = this.byte();
      value |= (b & 0x7f) << shift;
      if (b < 0x80) return value >>> 0;
    }
    // Bits past 32 are dropped, but the varint must still end within 10 bytes.
    for (let n = 5; n < 10; n++) if (this.byte() < 0x80) return value >>> 0;
    throw new Error("varint longer than 10 bytes");
  }

  /** A zigzag varint as a number if it fits exactly, else a bigint. */
  sint64(): number | bigint {
    let lo = 0;
    let hi = 0;
    let b = 0;
    let shift = 0;
    for (; shift < 28; shift += 7) {
      b = this.byte();
      lo |= (b & 0x7f) << shift;
      if (b < 0x80) return zigzag(lo >>> 0, 0);
    }
    b = this.byte();
    lo |= (b & 0x0f) << 28;
    hi = (b & 0x7f) >> 4;
    if (b < 0x80) return zigzag(lo >>> 0, hi);
    for (shift = 3; shift < 32; shift += 7) {
      b = this.byte();
      hi |= (b & 0x7f) << shift;
      if (b < 0x80) return zigzag(lo >>> 0, hi >>> 0);
    }
    throw new Error("varint longer than 10 bytes");
  }

  skip(wire: number): void {
    if (wire === Wire.Varint) this.uint32();
    else if (wire === Wire.Fixed64) this.advance(8);
    else if (wire === Wire.Fixed32) this.advance(4);
    else if (wire === Wire.Bytes) this.pos = this.lengthEnd();
    else throw new Error(`unsupported wire type ${wire} at byte ${this.pos}`);
  }

  /** Reads a length-delimited field's length: its content starts at `pos`; returns its end. */
  private bytesEnd(wire: number): number {
    if (wire !== Wire.Bytes) throw new Error(`wire type ${wire} for a string`);
    return this.lengthEnd();
  }

  private lengthEnd(): number {
    const length = this.uint32();
    const end = this.pos + length;
    if (end > this.end) throw new Error(`a length of ${length} runs past the end`);
    return end;
  }

  private advance(n: number): void {
    if (this.pos + n > this.end) throw new Error("premature end");
    this.pos += n;
  }

  private byte(): number {
    if (this.pos >= this.end) throw new Error("premature end of a varint");
    return this.buf[this.pos++]!;
  }
}

/** Undoes zigzag encoding of the unsigned 64-bit `hi:lo`. */
function zigzag(lo: number, hi: number): number | bigint {
  const negative = (lo & 1) === 1;
  // The magnitude part: (hi:lo) >>> 1.
  const mLo = ((lo >>> 1) | (hi << 31)) >>> 0;
  const mHi = hi >>> 1;
  if (mHi < 0x200000) {
    const m = mHi * 0x100000000 + mLo; // < 2^53: exact
    return negative ? -m - 1 : m;
  }
  const m = (BigInt(mHi) << 32n) | BigInt(mLo);
  return negative ? -m - 1n : m;
}

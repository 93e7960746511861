import { resolveAggregation } from "../actors/aggregations/aggregation.js";
import type { WindowPartial } from "../actors/router.js";
import type { PartitionMark } from "../actors/window-shard.js";
import { encodeStates } from "../actors/window-actor.js";

/**
 * What travels on a shard's mailbox subject: the partials of one router batch, or the
 * watermarks of a node's partitions. Both are in-band, so a shard sees a partition's watermark
 * only after every partial that contributed to it.
 */
export type MailboxMessage =
  /** `first`..`last`: the event stream sequences of the router batch, so a replayed batch is recognised. */
  | {
      type: "partials";
      partition: number;
      /** Who routed it, for de-duplication: the partition's router, or a backfill (`bf:<rule>@<activeFrom>:<partition>`). */
      origin?: string;
      first: number;
      last: number;
      partials: WindowPartial[];
    }
  | { type: "marks"; marks: [partition: number, PartitionMark][] }
  /** Partials another shard produced for this one's windows, de-duplicated by their message id. */
  | { type: "forwarded"; partials: WindowPartial[] };

/*
 * Partials go in a binary layout; marks (a few per second per shard) stay JSON. A JSON message
 * starts with `{`, a binary one with `version`, so messages written before an upgrade still read.
 *
 *   u8 version · u8 type (1 partials, 2 forwarded) · u32 LE where the tables start
 *   partials only: varint partition · varint first · varint last · varint origin (string index + 1, 0: none)
 *   varint n, n × partial (below)
 *   tables, written last as the partials fill them:
 *     strings: varint n · n × varint byte length · their UTF-8, one after the other: every string
 *       of the message, each metric, window id, dims shape and value and state key once, and
 *       every actor key
 *     dims: varint n, n × (varint name count · varint shape (string index of its names' JSON)
 *       · per name its value: varint 2 × string index, or 2 × string index + 1 · varint start
 *       · varint length, characters of that string (the key of its first partial))
 *   a partial:
 *     u8 flags (agg form in bits 0–1; 4: states; 8: a rare-field tail)
 *     varint key · varint metric · varint window (string indices) · f64 start · f64 end · varint dims
 *     agg: empty (0, 0, +∞, −∞): nothing · one value (count 1, sum = min = max): f64
 *       · integer count: varint count, f64 sum, min, max · other: f64 count, sum, min, max
 *     states: varint n, n × (varint state key · varint byte length · the aggregation's own encoding)
 *     tail: varint string index of the JSON of its `salts`, `fromSub`, `hold`, `release`
 *
 * The string table is what makes it small and fast: one series' partials share its dims object,
 * and most strings repeat across a batch. Dims are decoded once per message into one object that
 * the partials of that series share, as the in-process router's partials do.
 */
const version = 0xb1;
const typeCode = { partials: 1, forwarded: 2 } as const;
const aggEmpty = 0;
const aggOne = 1;
const aggCount = 2;
const aggOther = 3;
const hasStates = 4;
const hasTail = 8;

export function encodeMailbox(message: MailboxMessage): Uint8Array {
  if (message.type === "marks") {
    // -Infinity (no event seen yet) is not JSON: it travels as null.
    const marks = message.marks.map(([p, m]) => [p, Number.isFinite(m.watermark) ? m.watermark : null, m.idle]);
    return Buffer.from(JSON.stringify({ type: "marks", marks }));
  }
  return new Encoder().message(message);
}

export function decodeMailbox(bytes: Uint8Array): MailboxMessage {
  try {
    if (bytes[0] === version) return new Decoder(bytes).message();
    return decodeJson(bytes);
  } catch (e) {
    const head = Buffer.from(bytes.buffer, bytes.byteOffset, Math.min(bytes.byteLength, 16)).toString("hex");
    throw new Error(`malformed mailbox message (${bytes.byteLength} bytes, starting ${head}): ${(e as Error).message}`);
  }
}

class Encoder {
  private buf!: Buffer;
  /** Numbers through a DataView: the compiler inlines it, Buffer's own read and write go byte by byte. */
  private view!: DataView;
  private pos = 0;
  private strings: string[] = [];
  private stringIndex = new Map<string, number>();
  private dims: { shape: number; names: number; refs: number[] }[] = [];
  private dimsIndex = new Map<object, number>();
  /** The last dims shape seen: a message's dims mostly have one or two. */
  private lastNames: string[] = [];
  private lastShape = -1;
  /** A message's partials mostly have one metric and window: no lookup for each. */
  private lastMetric?: string;
  private metricAt = 0;
  private lastWindow?: string;
  private windowAt = 0;

  message(message: Exclude<MailboxMessage, { type: "marks" }>): Uint8Array {
    this.setBuffer(Buffer.allocUnsafe(256 + message.partials.length * 96));
    this.byte(version);
    this.byte(typeCode[message.type]);
    // Where the tables start: they are complete only after the partials.
    this.pos += 4;
    if (message.type === "partials") {
      this.varint(message.partition);
      this.varint(message.first);
      this.varint(message.last);
      this.varint(message.origin === undefined ? 0 : this.intern(message.origin) + 1);
    }
    this.varint(message.partials.length);
    for (const p of message.partials) this.partial(p);
    this.buf.writeUInt32LE(this.pos, 2);
    this.stringTable();
    this.varint(this.dims.length);
    for (const d of this.dims) {
      this.varint(d.names);
      this.varint(d.shape);
      for (const r of d.refs) this.varint(r);
    }
    return this.buf.subarray(0, this.pos);
  }

  /** Their byte lengths, then all of them: written in one go when all are ASCII (most messages). */
  private stringTable(): void {
    const strings = this.strings;
    const at = this.pos;
    const joined = strings.join("");
    this.varint(strings.length);
    for (const s of strings) this.varint(s.length);
    this.ensure(joined.length * 3);
    const written = this.buf.write(joined, this.pos);
    if (written === joined.length) {
      this.pos += written;
      return;
    }
    this.pos = at;
    this.varint(strings.length);
    for (const s of strings) this.varint(Buffer.byteLength(s));
    this.pos += this.buf.write(joined, this.pos);
  }

  private partial(p: WindowPartial): void {
    const { count, sum, min, max } = p.agg;
    const form =
      count === 0 && Object.is(sum, 0) && min === Infinity && max === -Infinity
        ? aggEmpty
        : count === 1 && Object.is(sum, min) && Object.is(sum, max)
          ? aggOne
          : Number.isSafeInteger(count) && count >= 0
            ? aggCount
            : aggOther;
    const tail = p.salts !== undefined || p.fromSub !== undefined || p.hold !== undefined || p.release !== undefined;
    this.byte(form | (p.states ? hasStates : 0) | (tail ? hasTail : 0));
    // An actor key is unique to its partial in a message: no point interning it.
    const keyAt = this.strings.push(p.key) - 1;
    this.varint(keyAt);
    if (p.metric !== this.lastMetric) this.metricAt = this.intern((this.lastMetric = p.metric));
    this.varint(this.metricAt);
    if (p.window !== this.lastWindow) this.windowAt = this.intern((this.lastWindow = p.window));
    this.varint(this.windowAt);
    this.f64(p.start);
    this.f64(p.end);
    this.varint(this.dimsOf(p.dims, p.key, keyAt));
    if (form === aggOne) this.f64(sum);
    else if (form === aggCount) {
      this.varint(count);
      this.f64(sum);
      this.f64(min);
      this.f64(max);
    } else if (form === aggOther) {
      this.f64(count);
      this.f64(sum);
      this.f64(min);
      this.f64(max);
    }
    if (p.states) {
      const keys = Object.keys(p.states);
      this.varint(keys.length);
      for (const stateKey of keys) {
        this.varint(this.intern(stateKey));
        this.bytes(stateBytes(stateKey, p.states[stateKey]));
      }
    }
    if (tail) {
      const { salts, fromSub, hold, release } = p;
      this.varint(this.strings.push(JSON.stringify({ salts, fromSub, hold, release })) - 1);
    }
  }

  private intern(s: string): number {
    let i = this.stringIndex.get(s);
    if (i === undefined) this.stringIndex.set(s, (i = this.strings.push(s) - 1));
    return i;
  }

  private dimsOf(dims: Record<string, string>, key: string, keyAt: number): number {
    let i = this.dimsIndex.get(dims);
    if (i !== undefined) return i;
    // Its names in order, compared with the last shape's without building anything.
    let n = 0;
    let same = true;
    for (const name in dims) if (this.lastNames[n++] !== name) same = false;
    if (!same || n !== this.lastNames.length || this.lastShape < 0) {
      this.lastNames = Object.keys(dims);
      this.lastShape = this.intern(JSON.stringify(this.lastNames));
    }
    // A value is mostly in the key too (its dims JSON): then taken from there, one string fewer
    // to write and to decode.
    const refs: number[] = [];
    for (const name in dims) {
      const value = dims[name]!;
      const at = key.indexOf(value);
      if (at >= 0) refs.push(keyAt * 2 + 1, at, value.length);
      else refs.push(this.intern(value) * 2);
    }
    this.dimsIndex.set(dims, (i = this.dims.push({ shape: this.lastShape, names: n, refs }) - 1));
    return i;
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(grown, 0, 0, this.pos);
    this.setBuffer(grown);
  }

  private setBuffer(buf: Buffer): void {
    this.buf = buf;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  private byte(b: number): void {
    this.ensure(1);
    this.buf[this.pos++] = b;
  }

  /** Non-negative integers up to 2^53 (stream sequences included). */
  private varint(v: number): void {
    if (!(Number.isSafeInteger(v) && v >= 0)) throw new Error(`mailbox message: ${v} is not a sequence, partition or count`);
    this.ensure(8);
    while (v >= 0x80) {
      this.buf[this.pos++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.pos++] = v;
  }

  private f64(v: number): void {
    this.ensure(8);
    this.view.setFloat64(this.pos, v, true);
    this.pos += 8;
  }

  private bytes(b: Uint8Array): void {
    this.varint(b.length);
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
}

/** A state's own binary encoding: from a live object (the router's), or from base64 (a window's hand-over). */
function stateBytes(stateKey: string, state: unknown): Uint8Array {
  if (state instanceof Uint8Array) return state;
  if (typeof state === "string") return Buffer.from(state, "base64");
  return resolveAggregation(stateKey).encode(state);
}

class Decoder {
  private buf: Buffer;
  private view: DataView;
  private pos = 0;
  private strings: string[] = [];
  private dims: Record<string, string>[] = [];

  constructor(bytes: Uint8Array) {
    this.buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  message(): MailboxMessage {
    this.pos = 1;
    const type = this.byte();
    if (type !== typeCode.partials && type !== typeCode.forwarded) throw new Error(`unknown message type ${type}`);
    const tablesAt = this.u32();
    let header: { partition: number; first: number; last: number; origin: number } | undefined;
    if (type === typeCode.partials) header = { partition: this.varint(), first: this.varint(), last: this.varint(), origin: this.varint() };
    const partialsAt = this.pos;
    if (tablesAt < partialsAt || tablesAt > this.buf.length) throw new Error(`tables at ${tablesAt}`);
    this.pos = tablesAt;
    this.tables();
    if (this.pos !== this.buf.length) throw new Error(`${this.buf.length - this.pos} bytes after the tables`);
    this.pos = partialsAt;
    const partials = new Array<WindowPartial>(this.varint());
    for (let i = 0; i < partials.length; i++) partials[i] = this.partial();
    if (this.pos !== tablesAt) throw new Error(`the partials end at ${this.pos}, the tables start at ${tablesAt}`);
    if (!header) return { type: "forwarded", partials };
    const { partition, first, last, origin } = header;
    const message: MailboxMessage = { type: "partials", partition, first, last, partials };
    if (origin > 0) message.origin = this.stringAt(origin - 1);
    return message;
  }

  private tables(): void {
    const strings = (this.strings = new Array<string>(this.varint()));
    const lengths = new Array<number>(strings.length);
    for (let i = 0; i < strings.length; i++) lengths[i] = this.varint();
    for (let i = 0; i < strings.length; i++) {
      const at = this.pos;
      strings[i] = this.buf.toString("utf8", at, this.advance(lengths[i]!));
    }
    const shapes = new Map<number, string[]>();
    const dims = (this.dims = new Array<Record<string, string>>(this.varint()));
    for (let i = 0; i < dims.length; i++) {
      const n = this.varint();
      const shape = this.varint();
      let names = shapes.get(shape);
      if (!names) shapes.set(shape, (names = JSON.parse(this.stringAt(shape)) as string[]));
      if (names.length !== n) throw new Error(`dims ${i} has ${n} values for ${names.length} names`);
      const d: Record<string, string> = {};
      for (let k = 0; k < n; k++) {
        const ref = this.varint();
        if (ref % 2 === 0) d[names[k]!] = this.stringAt(ref / 2);
        else {
          const key = this.stringAt((ref - 1) / 2);
          const at = this.varint();
          const length = this.varint();
          if (at + length > key.length) throw new Error(`dims ${i}: no characters ${at}..${at + length} in string ${(ref - 1) / 2}`);
          d[names[k]!] = key.substring(at, at + length);
        }
      }
      dims[i] = d;
    }
  }

  private partial(): WindowPartial {
    const flags = this.byte();
    const key = this.stringAt(this.varint());
    const metric = this.stringAt(this.varint());
    const window = this.stringAt(this.varint());
    const start = this.f64();
    const end = this.f64();
    const dimsAt = this.varint();
    const dims = this.dims[dimsAt];
    if (dims === undefined) throw new Error(`no dims ${dimsAt}`);
    const form = flags & 3;
    let agg;
    if (form === aggEmpty) agg = { count: 0, sum: 0, min: Infinity, max: -Infinity };
    else if (form === aggOne) {
      const v = this.f64();
      agg = { count: 1, sum: v, min: v, max: v };
    } else agg = { count: form === aggCount ? this.varint() : this.f64(), sum: this.f64(), min: this.f64(), max: this.f64() };
    const partial: WindowPartial = { key, metric, window, start, end, dims, agg };
    if (flags & hasStates) {
      const states: Record<string, unknown> = {};
      for (let n = this.varint(); n > 0; n--) {
        const stateKey = this.stringAt(this.varint());
        const length = this.varint();
        // A copy: a state decoded from a view could keep the whole message alive.
        const at = this.pos;
        states[stateKey] = new Uint8Array(this.buf.subarray(at, this.advance(length)));
      }
      partial.states = states;
    }
    if (flags & hasTail) {
      const { salts, fromSub, hold, release } = JSON.parse(this.stringAt(this.varint())) as Partial<WindowPartial>;
      if (salts !== undefined) partial.salts = salts;
      if (fromSub !== undefined) partial.fromSub = fromSub;
      if (hold !== undefined) partial.hold = hold;
      if (release !== undefined) partial.release = release;
    }
    return partial;
  }

  /** Moves past `n` bytes, returning where they end. */
  private advance(n: number): number {
    const end = this.pos + n;
    if (end > this.buf.length) throw new Error(`truncated at byte ${this.pos}`);
    return (this.pos = end);
  }

  private byte(): number {
    if (this.pos >= this.buf.length) throw new Error(`truncated at byte ${this.pos}`);
    return this.buf[this.pos++]!;
  }

  private varint(): number {
    let v = 0;
    for (let scale = 1; ; scale *= 0x80) {
      const b = this.byte();
      v += (b & 0x7f) * scale;
      if (b < 0x80) return v;
      if (scale > 2 ** 49) throw new Error(`varint too long at byte ${this.pos}`);
    }
  }

  private u32(): number {
    const at = this.pos;
    this.advance(4);
    return this.buf.readUInt32LE(at);
  }

  private f64(): number {
    const at = this.pos;
    this.advance(8);
    return this.view.getFloat64(at, true);
  }

  private stringAt(i: number): string {
    const s = this.strings[i];
    if (s === undefined) throw new Error(`no string ${i}`);
    return s;
  }
}

/**
 * The JSON layout of partials before the binary one (aggregate states as base64 of their binary
 * encoding): what a mailbox may still hold across an upgrade. Kept for tests and the benchmark.
 */
export function encodeMailboxJson(message: MailboxMessage): Uint8Array {
  if (message.type === "marks") return encodeMailbox(message);
  const partials = message.partials.map((p) => (p.states ? { ...p, states: encodeStates(p.states) } : p));
  return Buffer.from(JSON.stringify({ ...message, partials }));
}

/** A message from before the binary layout (in a mailbox stream across an upgrade), or marks. */
function decodeJson(bytes: Uint8Array): MailboxMessage {
  const message = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString());
  if (message.type === "partials" || message.type === "forwarded") {
    // An empty partial's ±Infinity travelled as null.
    for (const p of message.partials as WindowPartial[]) {
      if (p.agg.min === null) p.agg.min = Infinity;
      if (p.agg.max === null) p.agg.max = -Infinity;
    }
    return message as MailboxMessage;
  }
  if (message.type !== "marks") throw new Error(`unknown message type ${JSON.stringify(message.type)}`);
  return {
    type: "marks",
    marks: (message.marks as [number, number | null, boolean][]).map(([p, wm, idle]) => [p, { watermark: wm ?? -Infinity, idle }]),
  };
}

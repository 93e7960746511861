import type { TelemetryEvent } from "./event.js";
import { idFingerprint } from "./id-fingerprint.js";

/** Decides which rows stay (validation, de-duplication). */
export interface RowGate {
  /** Sees the fingerprints (three words an event) of a batch's events before any is admitted: a chance to prefetch. */
  prepare?(fingerprints: Uint32Array, count: number): void;
  /** Whether row `row`, just appended, stays. */
  admit(row: number): boolean;
}

/** The tags and values rules read (`Router.reads`). */
export interface ColumnReads {
  tags: readonly string[];
  values: readonly string[];
}

/**
 * A router's batch of events, in columns: what `Router.routeColumns` reads.
 *
 * Why columns: an object per event (with its tags and values objects, id and source strings) cost
 * the router more than the routing itself: building them, then collecting them (GC was a fifth
 * of the node's CPU). Here an event is a row of typed arrays; tag keys, tag values and value names
 * are indices into one string dictionary per batch, so a rule's dimensions are looked up as
 * numbers. Ids are kept only as fingerprints (all de-duplication needs); ids and sources of a
 * protobuf batch stay in the message bytes until somebody asks (`id`, `source`, `event`), which
 * the hot path does not.
 *
 * Reused batch after batch by one router (`reset`): nothing here outlives a batch.
 */
export class EventColumns {
  length = 0;
  private capacity = 0;
  /** Event time (ms). */
  ts = new Float64Array(0);
  /** Arrival time (ms; JetStream's stored time), Infinity when unknown. */
  arrival = new Float64Array(0);
  /** Index into `kinds`. */
  kind = new Int32Array(0);
  /** Three words per event: `idFingerprint` of its id. */
  fingerprint = new Uint32Array(0);
  /** The message (index into `messages`) and the event's index within it, for stable reject ids. */
  message = new Int32Array(0);
  indexInMessage = new Int32Array(0);
  /** Where the event's id and source lie in its message's bytes (-1: see `objects`, or the message's source). */
  idStart = new Int32Array(0);
  idEnd = new Int32Array(0);
  sourceStart = new Int32Array(0);
  sourceEnd = new Int32Array(0);
  /** End (exclusive) of the event's tags in `tagKey`/`tagValue`; they start at the previous event's end. */
  tagEnd = new Int32Array(0);
  /** End (exclusive) of the event's values in `valueName`/`value`. */
  valueEnd = new Int32Array(0);

  tagKey = new Int32Array(0);
  tagValue = new Int32Array(0);
  private tagCapacity = 0;
  tags = 0;
  valueName = new Int32Array(0);
  value = new Float64Array(0);
  private valueCapacity = 0;
  values = 0;

  private reads?: ColumnReads;

  /** Tag keys, tag values and value names of the batch. */
  readonly dict: string[] = [];
  private readonly dictIndex = new Map<string, number>();
  readonly kinds: string[] = [];
  private readonly kindIndex = new Map<string, number>();
  /** Per message: its bytes, and the source and kind its subject names. */
  readonly messages: { bytes: Uint8Array; source: string; kind: string }[] = [];
  /** Events appended as objects (JSON) or made from columns (`event`), by row; others have none (the array may be shorter). */
  private objects: (TelemetryEvent | undefined)[] = [];

  /**
   * Starts an empty batch. `reads`: the only tags and values any rule reads; events appended as
   * objects then keep only those in columns (their objects keep the rest), which saves interning
   * every tag of every JSON event. Rows read from protobuf keep all (they cost no strings).
   */
  reset(reads?: ColumnReads): void {
    this.reads = reads;
    this.length = 0;
    this.tags = 0;
    this.values = 0;
    this.dict.length = 0;
    this.dictIndex.clear();
    this.kinds.length = 0;
    this.kindIndex.clear();
    this.messages.length = 0;
    this.objects.length = 0;
  }

  intern(s: string): number {
    let i = this.dictIndex.get(s);
    if (i === undefined) {
      i = this.dict.length;
      this.dict.push(s);
      this.dictIndex.set(s, i);
    }
    return i;
  }

  /** The batch's dictionary index of each of `words` (a message's own dictionary), in a reused array. */
  dictionaryOf(words: readonly string[]): Int32Array {
    if (this.remap.length < words.length) this.remap = new Int32Array(Math.max(64, 2 * words.length));
    for (let j = 0; j < words.length; j++) this.remap[j] = this.intern(words[j]!);
    return this.remap;
  }

  private remap = new Int32Array(64);

  /** The dictionary index of `s` if the batch has it, else -1. */
  lookup(s: string): number {
    return this.dictIndex.get(s) ?? -1;
  }

  internKind(kind: string): number {
    let i = this.kindIndex.get(kind);
    if (i === undefined) {
      i = this.kinds.length;
      this.kinds.push(kind);
      this.kindIndex.set(kind, i);
    }
    return i;
  }

  addMessage(bytes: Uint8Array, source: string, kind: string): number {
    this.messages.push({ bytes, source, kind });
    return this.messages.length - 1;
  }

  /** Starts a row; its tags and values follow (`addTag`, `addValue`). Returns its index. */
  beginRow(ts: number, arrival: number, kind: number, message: number, indexInMessage: number): number {
    const i = this.length;
    if (i === this.capacity) this.grow();
    this.ts[i] = ts;
    this.arrival[i] = arrival;
    this.kind[i] = kind;
    this.message[i] = message;
    this.indexInMessage[i] = indexInMessage;
    this.idStart[i] = -1;
    this.sourceStart[i] = -1;
    this.tagEnd[i] = this.tags;
    this.valueEnd[i] = this.values;
    this.length = i + 1;
    return i;
  }

  addTag(key: number, value: number): void {
    if (this.tags === this.tagCapacity) this.growTags();
    this.tagKey[this.tags] = key;
    this.tagValue[this.tags] = value;
    this.tagEnd[this.length - 1] = ++this.tags;
  }

  addValue(name: number, value: number): void {
    if (this.values === this.valueCapacity) this.growValues();
    this.valueName[this.values] = name;
    this.value[this.values] = value;
    this.valueEnd[this.length - 1] = ++this.values;
  }

  /** The last row's fingerprint: words `3k…3k+2` of `words`. */
  setFingerprint(words: Uint32Array, k = 0): void {
    const j = 3 * (this.length - 1);
    this.fingerprint[j] = words[3 * k]!;
    this.fingerprint[j + 1] = words[3 * k + 1]!;
    this.fingerprint[j + 2] = words[3 * k + 2]!;
  }

  /** Drops the last row (a duplicate, or an event refused after it was read). */
  pop(): void {
    const i = --this.length;
    this.tags = i === 0 ? 0 : this.tagEnd[i - 1]!;
    this.values = i === 0 ? 0 : this.valueEnd[i - 1]!;
    if (this.objects.length > i) this.objects.length = i;
  }

  /** Appends a whole event given as an object (JSON, tests, backfill). */
  appendEvent(event: TelemetryEvent, arrival = Infinity, message = -1, indexInMessage = 0): void {
    this.beginRow(event.ts, arrival, this.internKind(event.kind), message, indexInMessage);
    const reads = this.reads;
    if (reads) {
      // Only own strings and numbers: `tags.constructor` is Object's, not a tag.
      for (const key of reads.tags) {
        const value = event.tags[key];
        if (typeof value === "string" && Object.hasOwn(event.tags, key)) this.addTag(this.intern(key), this.intern(value));
      }
      for (const name of reads.values) {
        const value = event.values[name];
        if (typeof value === "number" && Object.hasOwn(event.values, name)) this.addValue(this.intern(name), value);
      }
    } else {
      for (const key in event.tags) this.addTag(this.intern(key), this.intern(event.tags[key]!));
      for (const name in event.values) this.addValue(this.intern(name), event.values[name]!);
    }
    this.setFingerprint(idFingerprint(event.id));
    this.objects[this.length - 1] = event;
  }

  tagsStart(i: number): number {
    return i === 0 ? 0 : this.tagEnd[i - 1]!;
  }

  valuesStart(i: number): number {
    return i === 0 ? 0 : this.valueEnd[i - 1]!;
  }

  /** The dictionary index of row `i`'s value of tag `key` (a dictionary index), or -1. */
  tagOf(i: number, key: number): number {
    for (let t = this.tagsStart(i), end = this.tagEnd[i]!; t < end; t++) if (this.tagKey[t] === key) return this.tagValue[t]!;
    return -1;
  }

  /** Row `i`'s value named `name` (a dictionary index), or undefined. */
  valueOf(i: number, name: number): number | undefined {
    for (let v = this.valuesStart(i), end = this.valueEnd[i]!; v < end; v++) if (this.valueName[v] === name) return this.value[v]!;
    return undefined;
  }

  source(i: number): string {
    const object = this.objects[i];
    if (object) return object.source;
    const message = this.messages[this.message[i]!]!;
    const start = this.sourceStart[i]!;
    return start < 0 ? message.source : decodeAscii(message.bytes, start, this.sourceEnd[i]!);
  }

  id(i: number): string {
    const object = this.objects[i];
    if (object) return object.id;
    return decodeAscii(this.messages[this.message[i]!]!.bytes, this.idStart[i]!, this.idEnd[i]!);
  }

  /** Row `i` as an object: for aggregations that read whole events, and for rejects. */
  event(i: number): TelemetryEvent {
    const object = this.objects[i];
    if (object) return object;
    const tags: Record<string, string> = {};
    for (let t = this.tagsStart(i), end = this.tagEnd[i]!; t < end; t++) setOwn(tags, this.dict[this.tagKey[t]!]!, this.dict[this.tagValue[t]!]!);
    const values: Record<string, number> = {};
    for (let v = this.valuesStart(i), end = this.valueEnd[i]!; v < end; v++) setOwn(values, this.dict[this.valueName[v]!]!, this.value[v]!);
    const event = { id: this.id(i), ts: this.ts[i]!, source: this.source(i), kind: this.kinds[this.kind[i]!]!, tags, values };
    this.objects[i] = event;
    return event;
  }

  private grow(): void {
    const capacity = Math.max(1024, 2 * this.capacity);
    this.ts = grown(this.ts, capacity);
    this.arrival = grown(this.arrival, capacity);
    this.kind = grown(this.kind, capacity);
    this.fingerprint = grown(this.fingerprint, 3 * capacity);
    this.message = grown(this.message, capacity);
    this.indexInMessage = grown(this.indexInMessage, capacity);
    this.idStart = grown(this.idStart, capacity);
    this.idEnd = grown(this.idEnd, capacity);
    this.sourceStart = grown(this.sourceStart, capacity);
    this.sourceEnd = grown(this.sourceEnd, capacity);
    this.tagEnd = grown(this.tagEnd, capacity);
    this.valueEnd = grown(this.valueEnd, capacity);
    this.capacity = capacity;
  }

  private growTags(): void {
    this.tagCapacity = Math.max(4096, 2 * this.tagCapacity);
    this.tagKey = grown(this.tagKey, this.tagCapacity);
    this.tagValue = grown(this.tagValue, this.tagCapacity);
  }

  private growValues(): void {
    this.valueCapacity = Math.max(2048, 2 * this.valueCapacity);
    this.valueName = grown(this.valueName, this.valueCapacity);
    this.value = grown(this.value, this.valueCapacity);
  }
}

type TypedArray = Float64Array | Int32Array | Uint32Array;

function grown<T extends TypedArray>(array: T, length: number): T {
  const next = new (array.constructor as new (n: number) => T)(length);
  next.set(array);
  return next;
}

const utf8 = new TextDecoder();

/** Short ASCII strings without a decoder call (ids and sources mostly are). */
export function decodeAscii(bytes: Uint8Array, start: number, end: number): string {
  if (end - start > 32) return utf8.decode(bytes.subarray(start, end));
  const codes = codesOfLength[end - start]!; // reused: fromCharCode copies them
  for (let i = start; i < end; i++) {
    const byte = bytes[i]!;
    if (byte > 0x7f) return utf8.decode(bytes.subarray(start, end));
    codes[i - start] = byte;
  }
  return String.fromCharCode.apply(String, codes);
}

const codesOfLength = Array.from({ length: 33 }, (_, n) => new Array<number>(n).fill(0));

/** `obj[key] = value`, except that a key of "__proto__" becomes an own property too. */
export function setOwn<T>(obj: Record<string, T>, key: string, value: T): void {
  if (key === "__proto__") {
    Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
  } else {
    obj[key] = value;
  }
}

/**
 * Binary codec for batches of telemetry events (`tally.v1.EventBatch`, see tally.proto).
 *
 * Encoding choices:
 * - `ts` is delta-encoded against the first event (ts[0] absolute, ts[i] = offset from ts[0]).
 * - Tag keys, tag values and value names go through one shared string dictionary.
 * - `sources` and `kinds` are always written per event (no dictionary; they are short and
 *   protobuf strings keep the column readable). The proto also allows them to be empty,
 *   meaning "take them from the subject": pass `subject` to `decodeEventBatch` for that.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import type { TelemetryEvent } from "../actors/event.js";
import { readEventBatch, type EventBatchColumns } from "./event-batch-reader.js";
import { EventBatchSchema, type EventBatch } from "./gen/tally_pb.js";

/** Encodes events as one columnar `EventBatch`. Throws if an event's `ts` is not a safe integer. */
export function encodeEventBatch(events: TelemetryEvent[]): Uint8Array {
  const dict: string[] = [];
  const dictIndex = new Map<string, number>();
  const intern = (s: string): number => {
    let i = dictIndex.get(s);
    if (i === undefined) {
      i = dict.length;
      dict.push(s);
      dictIndex.set(s, i);
    }
    return i;
  };

  const batch: EventBatch = create(EventBatchSchema);
  const base = events.length > 0 ? events[0].ts : 0;
  for (let i = 0; i < events.length; i++) {
    const e = events[i];
    if (!Number.isSafeInteger(e.ts)) {
      throw new Error(`encodeEventBatch: event ${i} (id ${JSON.stringify(e.id)}) has non-integer ts ${e.ts}`);
    }
    batch.ids.push(e.id);
    batch.ts.push(i === 0 ? BigInt(e.ts) : BigInt(e.ts) - BigInt(base));
    batch.sources.push(e.source);
    batch.kinds.push(e.kind);
    const tags = Object.entries(e.tags);
    batch.tagCounts.push(tags.length);
    for (const [k, v] of tags) batch.tags.push(intern(k), intern(v));
    const values = Object.entries(e.values);
    batch.valueCounts.push(values.length);
    for (const [k, v] of values) {
      batch.valueNames.push(intern(k));
      batch.values.push(v);
    }
  }
  batch.dict = dict;
  return toBinary(EventBatchSchema, batch);
}

/**
 * Decodes an `EventBatch`. Throws an Error (and only an Error) on malformed input:
 * bad protobuf, inconsistent column lengths, dictionary index out of range, duplicate
 * tag key or value name within an event, or a ts outside the safe-integer range.
 *
 * `subject` supplies source and kind when the batch leaves those columns empty.
 */
export function decodeEventBatch(
  bytes: Uint8Array,
  subject?: { source: string; kind: string },
): TelemetryEvent[] {
  let b: EventBatchColumns;
  try {
    b = readEventBatch(bytes);
  } catch (err) {
    throw new Error(`EventBatch: invalid protobuf: ${err instanceof Error ? err.message : String(err)}`);
  }
  const n = b.ids.length;
  const fail = (msg: string): never => {
    throw new Error(`EventBatch: ${msg}`);
  };
  const expectLen = (name: string, len: number, want: number) => {
    if (len !== want) fail(`column ${name} has ${len} entries, expected ${want}`);
  };
  expectLen("ts", b.ts.length, n);
  expectLen("tag_counts", b.tagCounts.length, n);
  expectLen("value_counts", b.valueCounts.length, n);
  if (b.sources.length !== 0) expectLen("sources", b.sources.length, n);
  else if (n > 0 && subject === undefined) fail("column sources is empty and no subject source was given");
  if (b.kinds.length !== 0) expectLen("kinds", b.kinds.length, n);
  else if (n > 0 && subject === undefined) fail("column kinds is empty and no subject kind was given");
  expectLen("values", b.values.length, b.valueNames.length);
  // The sums are checked while walking the events, below, and in total at the end.

  const dict = b.dict;
  const word = (col: string, pos: number, idx: number): string => {
    if (idx >= dict.length) fail(`${col}[${pos}] = ${idx} is outside the dictionary (size ${dict.length})`);
    return dict[idx];
  };
  // A sum of two numbers the reader gave (|x| <= 2^53) is exact whenever it is safe; an offset
  // between two safe timestamps may itself exceed 2^53 (then a bigint): add those as bigints.
  const toTs = (i: number): number => {
    const first = b.ts[0]!;
    const offset = i === 0 ? 0 : b.ts[i]!;
    const ts = typeof first === "number" && typeof offset === "number" ? first + offset : Number(BigInt(first) + BigInt(offset));
    if (!Number.isSafeInteger(ts)) fail(`ts of event ${i} (${BigInt(first) + BigInt(offset)}) is outside the safe-integer range`);
    return ts;
  };

  const events: TelemetryEvent[] = new Array(n);
  let t = 0; // next position in `tags` (counts pairs, so index 2t, 2t+1)
  let v = 0; // next position in `value_names` / `values`
  for (let i = 0; i < n; i++) {
    const tagCount = b.tagCounts[i];
    if (2 * (t + tagCount) > b.tags.length) fail(`tag_counts[${i}] = ${tagCount} runs past the end of column tags`);
    const tags: Record<string, string> = {};
    for (let end = t + tagCount; t < end; t++) {
      const key = word("tags", 2 * t, b.tags[2 * t]);
      if (Object.hasOwn(tags, key)) fail(`event ${i} has tag ${JSON.stringify(key)} twice`);
      setOwn(tags, key, word("tags", 2 * t + 1, b.tags[2 * t + 1]));
    }
    const valueCount = b.valueCounts[i];
    if (v + valueCount > b.valueNames.length) fail(`value_counts[${i}] = ${valueCount} runs past the end of column value_names`);
    const values: Record<string, number> = {};
    for (let end = v + valueCount; v < end; v++) {
      const name = word("value_names", v, b.valueNames[v]);
      if (Object.hasOwn(values, name)) fail(`event ${i} has value ${JSON.stringify(name)} twice`);
      setOwn(values, name, b.values[v]);
    }
    events[i] = {
      id: b.ids[i],
      ts: toTs(i),
      source: b.sources.length > 0 ? b.sources[i] : subject!.source,
      kind: b.kinds.length > 0 ? b.kinds[i] : subject!.kind,
      tags,
      values,
    };
  }
  expectLen("tags", b.tags.length, 2 * t);
  expectLen("value_names", b.valueNames.length, v);
  return events;
}

/** `obj[key] = value`, except that a key of "__proto__" becomes an own property too. */
function setOwn<T>(obj: Record<string, T>, key: string, value: T): void {
  if (key === "__proto__") {
    Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
  } else {
    obj[key] = value;
  }
}

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
import { EventColumns } from "../actors/event-columns.js";
import { appendEventBatch } from "./append-event-batch.js";
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
 * Decodes an `EventBatch` into event objects (tests, tools; routers read batches into columns
 * with `appendEventBatch`). Throws an Error (and only an Error) on malformed input, as
 * `appendEventBatch` does. `subject` supplies source and kind when the batch leaves those columns empty.
 */
export function decodeEventBatch(bytes: Uint8Array, subject?: { source: string; kind: string }): TelemetryEvent[] {
  const columns = new EventColumns();
  appendEventBatch(columns, bytes, columns.addMessage(bytes, subject?.source ?? "", subject?.kind ?? ""), subject, Infinity);
  return Array.from({ length: columns.length }, (_, i) => columns.event(i));
}

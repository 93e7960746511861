import { DDSketch } from "@datadog/sketches-js";
import type { TelemetryEvent } from "../event.js";
import { HyperLogLog } from "../sketches/hyperloglog.js";
import { SpaceSaving } from "../sketches/space-saving.js";
import { registerAggregation, type Aggregation } from "./aggregation.js";

/** Relative accuracy of every percentile: a reported p-quantile is within ±1% of a true value at that rank. */
export const quantileRelativeAccuracy = 0.01;

/** The field an aggregate reads: `source`, or a tag. */
function fieldOf(event: TelemetryEvent, field: string): string | undefined {
  return event.tags[field] ?? (field === "source" ? event.source : undefined);
}

/** `p50`, `p99`, `p99.9`…: quantiles of the rule's value from one shared DDSketch (1% relative accuracy). */
function quantile(name: string, match: RegExpExecArray): Aggregation<DDSketch> {
  // `quantiles` names the shared state itself (it answers the median).
  const p = match[1] === undefined ? 50 : Number(match[1]);
  if (!(p >= 0 && p <= 100)) throw new Error(`percentile ${name} must be between p0 and p100`);
  return {
    stateKey: "quantiles",
    needsValue: true,
    init: () => new DDSketch({ relativeAccuracy: quantileRelativeAccuracy }),
    add: (sketch, value) => sketch.accept(value!),
    addValue: (sketch, value) => sketch.accept(value!),
    merge: mergeSketches,
    result: (sketch) => (sketch.count === 0 ? null : sketch.getValueAtQuantile(p / 100)),
    encode: (sketch) => sketch.toProto(),
    // Into a sketch with this process's own mapping: one decoded as it comes reads quantiles a few
    // floating-point bits off, so a result would depend on whether its window was ever passivated.
    decode: (bytes) => mergeSketches(new DDSketch({ relativeAccuracy: quantileRelativeAccuracy }), DDSketch.fromProto(bytes)),
  };
}

/**
 * `DDSketch.merge` of sketches-js 2.1.1 merges only the positive store of two non-empty sketches:
 * negative values of `from` are lost while the count still includes them, so quantiles come out
 * wrong (DataDog/sketches-js#22). Merge the negative store too, unless the library already does.
 */
function mergeSketches(into: DDSketch, from: DDSketch): DDSketch {
  const both = into.count > 0 && from.count > 0;
  into.merge(from);
  if (both && !libraryMergesNegatives) into.negativeStore.merge(from.negativeStore);
  return into;
}

const libraryMergesNegatives = (() => {
  const [a, b] = [new DDSketch(), new DDSketch()];
  a.accept(-1);
  b.accept(-1);
  a.merge(b);
  return a.negativeStore.count === 2;
})();

/**
 * `hist`: counts per bucket for the dashboard, on a 1-2-5 scale (…, 0.5, 1, 2, 5, 10, 20, …),
 * mirrored for negative values. Key = the bucket's upper bound ("le"), as a string.
 */
function histogram(): Aggregation<Map<number, number>> {
  return {
    stateKey: "hist",
    needsValue: true,
    init: () => new Map(),
    add: (buckets, value) => addToBucket(buckets, value!),
    addValue: (buckets, value) => addToBucket(buckets, value!),
    merge: (into, from) => {
      for (const [bound, n] of from) into.set(bound, (into.get(bound) ?? 0) + n);
      return into;
    },
    result: (buckets) => Object.fromEntries([...buckets].sort((a, b) => a[0] - b[0]).map(([bound, n]) => [String(bound), n])),
    encode: (buckets) => Buffer.from(JSON.stringify([...buckets])),
    decode: (bytes) => new Map(JSON.parse(Buffer.from(bytes).toString()) as [number, number][]),
  };
}

function addToBucket(buckets: Map<number, number>, value: number): void {
  const bound = upperBound(value);
  buckets.set(bound, (buckets.get(bound) ?? 0) + 1);
}

/** Signed 1-2-5 bucket of `value`: the smallest of ±1, ±2, ±5 × 10^k whose magnitude holds |value|. */
function upperBound(value: number): number {
  if (value === 0) return 0;
  const magnitude = Math.abs(value);
  const decade = 10 ** Math.floor(Math.log10(magnitude));
  const step = [1, 2, 5, 10].find((s) => magnitude <= s * decade * (1 + 1e-12))!;
  return Math.sign(value) * Number((step * decade).toPrecision(12));
}

/** `last`: the value of the latest event (by event time; ties broken by event id, so it is deterministic). */
interface Last {
  ts: number;
  id: string;
  value: number | null;
}
function last(): Aggregation<Last> {
  const take = (state: Last, ts: number, id: string, value: number | null) => {
    if (ts > state.ts || (ts === state.ts && id > state.id)) Object.assign(state, { ts, id, value });
  };
  return {
    stateKey: "last",
    needsValue: true,
    init: () => ({ ts: -Infinity, id: "", value: null }),
    add: (state, value, event) => take(state, event.ts, event.id, value!),
    merge: (into, from) => (take(into, from.ts, from.id, from.value), into),
    result: (state) => state.value,
    encode: (state) => Buffer.from(JSON.stringify(state.value === null ? null : state)),
    decode: (bytes) => (JSON.parse(Buffer.from(bytes).toString()) as Last | null) ?? { ts: -Infinity, id: "", value: null },
  };
}

/** `distinct:<field>`: distinct values of `source` or a tag, by HyperLogLog (exact while small). */
function distinct(name: string, match: RegExpExecArray): Aggregation<HyperLogLog> {
  const field = match[1]!;
  return {
    stateKey: name,
    needsValue: false,
    init: () => new HyperLogLog(),
    add: (hll, _value, event) => {
      const v = fieldOf(event, field);
      if (v !== undefined) hll.add(v);
    },
    field,
    addField: (hll, v) => {
      if (v !== undefined) hll.add(v);
    },
    merge: (into, from) => (into.merge(from), into),
    result: (hll) => hll.count(),
    encode: (hll) => hll.encode(),
    decode: (bytes) => HyperLogLog.decode(bytes),
  };
}

/** `top<K>:<field>`: the K most frequent values of `source` or a tag, with counts (SpaceSaving). */
function top(name: string, match: RegExpExecArray): Aggregation<SpaceSaving> {
  const k = Number(match[1]);
  const field = match[2]!;
  if (!(k >= 1 && k <= 1000)) throw new Error(`${name}: K must be between 1 and 1000`);
  const capacity = Math.max(8 * k, 64);
  return {
    stateKey: name,
    needsValue: false,
    init: () => new SpaceSaving(capacity),
    add: (summary, _value, event) => {
      const v = fieldOf(event, field);
      if (v !== undefined) summary.add(v);
    },
    field,
    addField: (summary, v) => {
      if (v !== undefined) summary.add(v);
    },
    merge: (into, from) => (into.merge(from), into),
    result: (summary) => summary.top(k).map(({ key, count }) => ({ key, count })),
    encode: (summary) => summary.encode(),
    decode: (bytes) => SpaceSaving.decode(bytes),
  };
}

registerAggregation(/^(?:p(\d+(?:\.\d+)?)|quantiles)$/, quantile);
registerAggregation(/^hist$/, histogram);
registerAggregation(/^last$/, last);
registerAggregation(/^distinct:([A-Za-z0-9_.-]+)$/, distinct);
registerAggregation(/^top(\d+):([A-Za-z0-9_.-]+)$/, top);

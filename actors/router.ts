import { actorKey, saltedKey, shardOfKey } from "./actor-keys.js";
import type { HotSeries } from "./hot-keys.js";
import { addValue, emptyAgg, type BasicAgg } from "./aggregates.js";
import type { TelemetryEvent } from "./event.js";
import type { MetricRule } from "./rules.js";
import type { WindowIdentity } from "./window-result.js";
import { lastWindowStart, windowStarts } from "./windows.js";

/** The combined contribution of one batch of events to one window actor. */
export interface WindowPartial extends WindowIdentity {
  key: string;
  agg: BasicAgg;
  /** States of the rule's other aggregates, by state key (live objects here; encoded on the wire). */
  states?: Record<string, unknown>;
  /** To a hot series' window: which of its salted sub-actors got events of this batch (it waits for them before it is final). */
  salts?: number[];
  /** From a salted sub-actor to its window: the sub-actor's `n`-th hand-over in its life since `born`; `done` once it is final. */
  fromSub?: { salt: number; n: number; done: boolean; born: number };
  /** From a finer window to its rollup window: it is due but waits (for sub-actors); wait for it. */
  hold?: string;
  /** From a finer window to its rollup window: its final hand-over, ending its `hold`. */
  release?: string;
}

export interface RoutedBatch {
  /** Partials per shard, one per actor key. */
  byShard: Map<number, WindowPartial[]>;
  /** Per event, in input order: what became of it. */
  outcomes: Uint8Array;
}

/** What became of an event: the best over all rules decides. */
export const Outcome = {
  /** Matched no rule. */
  Unmatched: 0,
  /** Matched rules only for windows already past their correction horizon. */
  TooLate: 1,
  /** Aggregated into at least one window. */
  Aggregated: 2,
} as const;

/**
 * The router's pure core: matches events to rules, assigns event-time windows and combines
 * everything that goes to the same actor within the batch, so one message per shard carries a
 * whole batch's worth of work.
 */
export class Router {
  private byKind = new Map<string, MetricRule[]>();
  /** Salted series by `metric\tdimsId`. */
  private hot = new Map<string, HotSeries>();

  constructor(
    rules: readonly MetricRule[],
    private readonly shardCount: number,
  ) {
    this.setRules(rules);
  }

  setRules(rules: readonly MetricRule[]): void {
    const byKind = new Map<string, MetricRule[]>();
    for (const rule of rules) {
      const list = byKind.get(rule.kind) ?? [];
      list.push(rule);
      byKind.set(rule.kind, list);
    }
    this.byKind = byKind;
  }

  /** The series to salt (README, "Hot keys"); each entry applies to events by their arrival time. */
  setHotSeries(series: readonly HotSeries[]): void {
    this.hot = new Map(series.map((s) => [`${s.metric}\t${s.dimsId}`, s]));
  }

  /**
   * `watermark`: the event time before which windows past `end + lateness + horizon` take no
   * more events. It must be deterministic for a given input (a replay routes the same way).
   * `partition`: where the batch came from; it picks the sub-actor of a salted series.
   */
  route(events: readonly TelemetryEvent[], watermark = -Infinity, arrivals?: readonly number[], partition = 0): RoutedBatch {
    const batch: BatchState = { partials: new Map(), series: new Map(), watermark };
    const outcomes = new Uint8Array(events.length);
    const any = this.byKind.get("*") ?? none;
    for (let i = 0; i < events.length; i++) {
      const event = events[i]!;
      let outcome: number = Outcome.Unmatched;
      const arrival = arrivals?.[i] ?? Infinity;
      const ofKind = this.byKind.get(event.kind) ?? none;
      for (let r = 0; r < ofKind.length + any.length; r++) {
        const rule = r < ofKind.length ? ofKind[r]! : any[r - ofKind.length]!;
        // A rule added live counts events that arrived after it became active (README, "Live rules").
        if (arrival < rule.activeFrom) continue;
        outcome = Math.max(outcome, this.add(rule, event, batch, arrival, partition));
      }
      outcomes[i] = outcome;
    }
    const byShard = new Map<number, WindowPartial[]>();
    for (const partial of batch.partials.values()) {
      const shard = shardOfKey(partial.key, this.shardCount);
      const list = byShard.get(shard);
      if (list) list.push(partial);
      else byShard.set(shard, [partial]);
    }
    return { byShard, outcomes };
  }

  /** The sub-actor of a salted series this event goes to, if its series is salted at its arrival. */
  private saltOf(rule: MetricRule, series: BatchSeries, arrival: number, partition: number): number | undefined {
    if (series.hot === undefined) series.hot = this.hot.get(`${rule.name}\t${series.dimsId}`) ?? null;
    const hot = series.hot;
    if (!hot || arrival < hot.from || (hot.until !== undefined && arrival >= hot.until)) return undefined;
    return partition % hot.salts;
  }

  private add(rule: MetricRule, event: TelemetryEvent, batch: BatchState, arrival: number, partition: number): number {
    for (const tag in rule.where) if (event.tags[tag] !== rule.where[tag]) return Outcome.Unmatched;
    const value = rule.value === undefined ? 0 : event.values[rule.value];
    if (value === undefined) return Outcome.Unmatched;
    const series = seriesOf(rule, event, batch.series);
    const salt = this.hot.size === 0 ? undefined : this.saltOf(rule, series, arrival, partition);
    let outcome: number = Outcome.TooLate;
    for (let w = 0; w < rule.windows.length; w++) {
      const window = rule.windows[w]!;
      // A tumbling window (the common case) has one start: no array for it.
      const tumbling = window.sizeMs === window.slideMs;
      const starts = tumbling ? undefined : windowStarts(window, event.ts);
      for (let s = 0, n = starts ? starts.length : 1; s < n; s++) {
        const start = starts ? starts[s]! : lastWindowStart(window, event.ts);
        if (start + window.sizeMs + rule.latenessMs + rule.horizonMs <= batch.watermark) continue;
        outcome = Outcome.Aggregated;
        const partial = salt === undefined ? unsaltedPartial(rule, series, w, start, batch) : saltedPartial(rule, series, w, start, salt, batch);
        addValue(partial.agg, value);
        for (const aggregation of rule.states) {
          const states = partial.states!;
          const state = (states[aggregation.stateKey] ??= aggregation.init());
          aggregation.add(state, rule.value === undefined ? undefined : value, event);
        }
      }
    }
    return outcome;
  }
}

const none: readonly MetricRule[] = [];

/** What one `route` call has built so far. */
interface BatchState {
  /** Every partial by actor key, in the order first met (the order of the mailbox message). */
  partials: Map<string, WindowPartial>;
  /** Per rule, the series met in this batch, by their dimension values one level per `groupBy` entry. */
  series: Map<MetricRule, Map<string, unknown>>;
  watermark: number;
}

/** A series (one combination of dimension values) met in this batch. */
interface BatchSeries {
  dimsId: string;
  dims: Record<string, string>;
  /** Its unsalted partials per window of the rule (by index), by window start. */
  byWindow: Map<number, WindowPartial>[];
  /** Whether it is salted (looked up once per batch; null: not). */
  hot?: HotSeries | null;
  /** Its salted sub-actors' partials per window of the rule (by index), by salt, by window start. */
  bySalt?: Map<number, Map<number, WindowPartial>>[];
}

/**
 * The event's series for `rule`, looked up by its dimension values (a map per `groupBy` level),
 * so most events of a batch cost a few map lookups, no JSON and no key string.
 */
function seriesOf(rule: MetricRule, event: TelemetryEvent, index: Map<MetricRule, Map<string, unknown>>): BatchSeries {
  let level = index.get(rule);
  if (!level) index.set(rule, (level = new Map()));
  const depth = rule.groupBy.length;
  for (let d = 0; d < depth - 1; d++) {
    const value = dimensionValue(event, rule.groupBy[d]!);
    let next = level.get(value) as Map<string, unknown> | undefined;
    if (!next) level.set(value, (next = new Map()));
    level = next;
  }
  const last = depth === 0 ? "" : dimensionValue(event, rule.groupBy[depth - 1]!);
  let series = level.get(last) as BatchSeries | undefined;
  if (!series) {
    const dimValues = rule.groupBy.map((name) => dimensionValue(event, name));
    const dims: Record<string, string> = {};
    rule.groupBy.forEach((name, i) => (dims[name] = dimValues[i]!));
    series = { dimsId: JSON.stringify(dimValues), dims, byWindow: rule.windows.map(() => new Map()) };
    level.set(last, series);
  }
  return series;
}

function unsaltedPartial(rule: MetricRule, series: BatchSeries, w: number, start: number, batch: BatchState): WindowPartial {
  const partials = series.byWindow[w]!;
  let partial = partials.get(start);
  if (!partial) {
    const window = rule.windows[w]!;
    const key = actorKey(rule.name, window.id, start, series.dimsId);
    // A salted event of this batch may have made the window's marker first: it takes the events too.
    partial = batch.partials.get(key);
    if (!partial) batch.partials.set(key, (partial = newPartial(rule, key, window.id, start, window.sizeMs, series.dims)));
    else if (rule.states.length > 0) partial.states ??= {};
    partials.set(start, partial);
  }
  return partial;
}

/** A hot series' sub-actor partial; the window itself hears which sub-actors have its events, in the same batch. */
function saltedPartial(rule: MetricRule, series: BatchSeries, w: number, start: number, salt: number, batch: BatchState): WindowPartial {
  series.bySalt ??= rule.windows.map(() => new Map());
  let partials = series.bySalt[w]!.get(salt);
  if (!partials) series.bySalt[w]!.set(salt, (partials = new Map()));
  let partial = partials.get(start);
  if (partial) return partial;
  const window = rule.windows[w]!;
  const windowKey = actorKey(rule.name, window.id, start, series.dimsId);
  const key = saltedKey(windowKey, salt);
  batch.partials.set(key, (partial = newPartial(rule, key, window.id, start, window.sizeMs, series.dims)));
  partials.set(start, partial);
  let marker = batch.partials.get(windowKey);
  if (!marker) {
    marker = { key: windowKey, metric: rule.name, window: window.id, start, end: start + window.sizeMs, dims: series.dims, agg: emptyAgg() };
    batch.partials.set(windowKey, marker);
  }
  if (!(marker.salts ??= []).includes(salt)) marker.salts.push(salt);
  return partial;
}

function newPartial(rule: MetricRule, key: string, window: string, start: number, sizeMs: number, dims: Record<string, string>): WindowPartial {
  const partial: WindowPartial = { key, metric: rule.name, window, start, end: start + sizeMs, dims, agg: emptyAgg() };
  if (rule.states.length > 0) partial.states = {};
  return partial;
}

/** A missing tag groups under the empty string. `source` is the event's source unless a tag says otherwise. */
function dimensionValue(event: TelemetryEvent, name: string): string {
  return event.tags[name] ?? (name === "source" ? event.source : "");
}

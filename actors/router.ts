import { actorKey, saltedKey, shardOfKey } from "./actor-keys.js";
import type { HotSeries } from "./hot-keys.js";
import { addValue, emptyAgg, type BasicAgg } from "./aggregates.js";
import type { TelemetryEvent } from "./event.js";
import { EventColumns, type ColumnReads } from "./event-columns.js";
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

  /** The tags and values any rule reads: all a batch needs in columns of its events given as objects. */
  reads: ColumnReads = { tags: [], values: [] };

  setRules(rules: readonly MetricRule[]): void {
    const tags = new Set<string>();
    const values = new Set<string>();
    for (const rule of rules) {
      for (const name of rule.groupBy) tags.add(name);
      for (const name in rule.where) tags.add(name);
      for (const aggregation of rule.states) if (aggregation.field !== undefined) tags.add(aggregation.field);
      if (rule.value !== undefined) values.add(rule.value);
    }
    this.reads = { tags: [...tags], values: [...values] };
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
   * `route` for events given as objects (tests, backfills): `arrivals` per event, else Infinity.
   */
  route(events: readonly TelemetryEvent[], watermark = -Infinity, arrivals?: readonly number[], partition = 0): RoutedBatch {
    const columns = new EventColumns();
    columns.reset(this.reads);
    events.forEach((event, i) => columns.appendEvent(event, arrivals?.[i] ?? Infinity));
    return this.routeColumns(columns, watermark, partition);
  }

  /**
   * `watermark`: the event time before which windows past `end + lateness + horizon` take no
   * more events. It must be deterministic for a given input (a replay routes the same way).
   * `partition`: where the batch came from; it picks the sub-actor of a salted series.
   */
  routeColumns(columns: EventColumns, watermark = -Infinity, partition = 0): RoutedBatch {
    const batch: BatchState = { partials: new Map(), watermark, columns };
    const plansByKind = this.plansByKind(columns);
    const outcomes = new Uint8Array(columns.length);
    for (let i = 0; i < columns.length; i++) {
      const plans = plansByKind[columns.kind[i]!]!;
      const arrival = columns.arrival[i]!;
      let outcome: number = Outcome.Unmatched;
      for (let r = 0; r < plans.length; r++) {
        const plan = plans[r]!;
        // A rule added live counts events that arrived after it became active (README, "Live rules").
        if (arrival < plan.rule.activeFrom) continue;
        outcome = Math.max(outcome, this.add(plan, i, batch, arrival, partition));
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

  /** Per kind of the batch (by index), the plans of the rules that take it. */
  private plansByKind(columns: EventColumns): RulePlan[][] {
    const plans = new Map<MetricRule, RulePlan>();
    const planOf = (rule: MetricRule) => {
      let plan = plans.get(rule);
      if (!plan) plans.set(rule, (plan = planRule(rule, columns)));
      return plan;
    };
    const any = this.byKind.get("*") ?? none;
    return columns.kinds.map((kind) => [...(this.byKind.get(kind) ?? none), ...any].map(planOf));
  }

  /** The sub-actor of a salted series this event goes to, if its series is salted at its arrival. */
  private saltOf(rule: MetricRule, series: BatchSeries, arrival: number, partition: number): number | undefined {
    if (series.hot === undefined) series.hot = this.hot.get(`${rule.name}\t${series.dimsId}`) ?? null;
    const hot = series.hot;
    if (!hot || arrival < hot.from || (hot.until !== undefined && arrival >= hot.until)) return undefined;
    return partition % hot.salts;
  }

  private add(plan: RulePlan, i: number, batch: BatchState, arrival: number, partition: number): number {
    if (plan.impossible) return Outcome.Unmatched;
    const { rule } = plan;
    const columns = batch.columns;
    for (let w = 0; w < plan.where.length; w += 2) if (columns.tagOf(i, plan.where[w]!) !== plan.where[w + 1]) return Outcome.Unmatched;
    let value = 0;
    if (plan.value >= 0) {
      const v = columns.valueOf(i, plan.value);
      if (v === undefined) return Outcome.Unmatched;
      value = v;
    }
    const series = seriesOf(plan, columns, i);
    const salt = this.hot.size === 0 ? undefined : this.saltOf(rule, series, arrival, partition);
    const ts = columns.ts[i]!;
    let outcome: number = Outcome.TooLate;
    for (let w = 0; w < rule.windows.length; w++) {
      const window = rule.windows[w]!;
      // A tumbling window (the common case) has one start: no array for it.
      const tumbling = window.sizeMs === window.slideMs;
      const starts = tumbling ? undefined : windowStarts(window, ts);
      for (let s = 0, n = starts ? starts.length : 1; s < n; s++) {
        const start = starts ? starts[s]! : tumblingStart(plan, w, ts);
        if (start + window.sizeMs + rule.latenessMs + rule.horizonMs <= batch.watermark) continue;
        outcome = Outcome.Aggregated;
        // Most events of a series in a batch go to the window (and sub-actor) its previous event went to.
        const last = series.last[w]!;
        let partial = last.partial;
        if (last.start !== start || last.salt !== (salt ?? -1) || !partial) {
          partial = salt === undefined ? unsaltedPartial(rule, series, w, start, batch) : saltedPartial(rule, series, w, start, salt, batch);
          last.start = start;
          last.salt = salt ?? -1;
          last.partial = partial;
        }
        addValue(partial.agg, value);
        for (let a = 0; a < rule.states.length; a++) {
          const aggregation = rule.states[a]!;
          const states = partial.states!;
          const state = (states[aggregation.stateKey] ??= aggregation.init());
          const v = rule.value === undefined ? undefined : value;
          // Without an event object where the aggregation says what it reads.
          if (aggregation.addValue) aggregation.addValue(state, v);
          else if (aggregation.addField) aggregation.addField(state, fieldValue(plan, columns, i, a));
          else aggregation.add(state, v, columns.event(i));
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
  watermark: number;
  columns: EventColumns;
}

/** A rule as this batch's dictionary spells it: what it reads, as dictionary indices. */
interface RulePlan {
  rule: MetricRule;
  /** No event of the batch can match (a `where` tag or value, or the value name, is nowhere in it). */
  impossible: boolean;
  /** `where` as pairs of tag key and value. */
  where: number[];
  /** The tag key of each `groupBy` level (-1: no event has it). */
  groupKeys: number[];
  /** The value read (-1: the rule reads none). */
  value: number;
  /** The empty string's index: the value of a missing tag. */
  empty: number;
  /** The series met in this batch, by their dimension values (indices), one map level per `groupBy` entry. */
  series: Map<number, unknown>;
  /** The one series of a rule without `groupBy`. */
  only?: BatchSeries;
  /** Per window of the rule (by index): the start of the tumbling window the last event fell in. */
  lastStart: number[];
  /** Per aggregation of the rule's states (by index): the tag key of the field it reads (-1: none in the batch). */
  fieldKeys: number[];
}

/** What `fieldOf` in the built-in aggregations reads: the tag, else `source` for the field `source`. */
function fieldValue(plan: RulePlan, columns: EventColumns, i: number, a: number): string | undefined {
  const key = plan.fieldKeys[a]!;
  const value = key < 0 ? -1 : columns.tagOf(i, key);
  if (value >= 0) return columns.dict[value];
  return plan.rule.states[a]!.field === "source" ? columns.source(i) : undefined;
}

/** `lastWindowStart` of a tumbling window, without a floating-point modulo when the event falls in the same window as the last one. */
function tumblingStart(plan: RulePlan, w: number, ts: number): number {
  const last = plan.lastStart[w]!;
  const window = plan.rule.windows[w]!;
  if (ts >= last && ts < last + window.sizeMs) return last;
  return (plan.lastStart[w] = lastWindowStart(window, ts));
}

function planRule(rule: MetricRule, columns: EventColumns): RulePlan {
  const where: number[] = [];
  let impossible = false;
  for (const tag in rule.where) {
    const key = columns.lookup(tag);
    const value = columns.lookup(rule.where[tag]!);
    if (key < 0 || value < 0) impossible = true;
    where.push(key, value);
  }
  let value = -1;
  if (rule.value !== undefined) {
    value = columns.lookup(rule.value);
    if (value < 0) impossible = true;
  }
  return { rule, impossible, where, groupKeys: rule.groupBy.map((name) => columns.lookup(name)), value, empty: columns.intern(""), series: new Map(),
    lastStart: rule.windows.map(() => NaN),
    fieldKeys: rule.states.map((aggregation) => (aggregation.field === undefined ? -1 : columns.lookup(aggregation.field))),
  };
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
  /** Per window of the rule (by index): the partial its last event went to, with that window's start and salt (-1: none). */
  last: { start: number; salt: number; partial?: WindowPartial }[];
}

/**
 * The event's series for the plan's rule, looked up by its dimension values (dictionary indices,
 * a map per `groupBy` level), so most events of a batch cost a few numeric map lookups.
 */
function seriesOf(plan: RulePlan, columns: EventColumns, i: number): BatchSeries {
  const depth = plan.groupKeys.length;
  if (depth === 0) return (plan.only ??= newSeries(plan, columns, []));
  let level = plan.series;
  for (let d = 0; d < depth - 1; d++) {
    const value = dimensionValue(plan, columns, i, d);
    let next = level.get(value) as Map<number, unknown> | undefined;
    if (!next) level.set(value, (next = new Map()));
    level = next;
  }
  const last = dimensionValue(plan, columns, i, depth - 1);
  let series = level.get(last) as BatchSeries | undefined;
  if (!series) {
    const values: number[] = [];
    for (let d = 0; d < depth; d++) values.push(dimensionValue(plan, columns, i, d));
    level.set(last, (series = newSeries(plan, columns, values)));
  }
  return series;
}

function newSeries(plan: RulePlan, columns: EventColumns, values: number[]): BatchSeries {
  const { rule } = plan;
  const dimValues = values.map((v) => columns.dict[v]!);
  const dims: Record<string, string> = {};
  rule.groupBy.forEach((name, d) => (dims[name] = dimValues[d]!));
  return { dimsId: JSON.stringify(dimValues), dims, byWindow: rule.windows.map(() => new Map()), last: rule.windows.map(() => ({ start: NaN, salt: -1 })) };
}

/** A missing tag groups under the empty string. `source` is the event's source unless a tag says otherwise. */
function dimensionValue(plan: RulePlan, columns: EventColumns, i: number, level: number): number {
  const key = plan.groupKeys[level]!;
  const value = key < 0 ? -1 : columns.tagOf(i, key);
  if (value >= 0) return value;
  return plan.rule.groupBy[level] === "source" ? columns.intern(columns.source(i)) : plan.empty;
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

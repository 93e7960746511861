import { actorKey, saltedKey, shardOfKey } from "./actor-keys.js";
import type { HotSeries } from "./hot-keys.js";
import { addValue, emptyAgg, type BasicAgg } from "./aggregates.js";
import type { TelemetryEvent } from "./event.js";
import type { MetricRule } from "./rules.js";
import type { WindowIdentity } from "./window-result.js";
import { windowStarts } from "./windows.js";

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
    const partials = new Map<string, WindowPartial>();
    const outcomes = new Uint8Array(events.length);
    const any = this.byKind.get("*") ?? [];
    events.forEach((event, i) => {
      let outcome: number = Outcome.Unmatched;
      const arrival = arrivals?.[i] ?? Infinity;
      for (const rules of [this.byKind.get(event.kind), any]) {
        if (!rules) continue;
        for (const rule of rules) {
          // A rule added live counts events that arrived after it became active (README, "Live rules").
          if (arrival < rule.activeFrom) continue;
          outcome = Math.max(outcome, this.add(rule, event, partials, watermark, this.saltOf(rule, event, arrival, partition)));
        }
      }
      outcomes[i] = outcome;
    });
    const byShard = new Map<number, WindowPartial[]>();
    for (const partial of partials.values()) {
      const shard = shardOfKey(partial.key, this.shardCount);
      const list = byShard.get(shard);
      if (list) list.push(partial);
      else byShard.set(shard, [partial]);
    }
    return { byShard, outcomes };
  }

  /** The sub-actor of a salted series this event goes to, if its series is salted at its arrival. */
  private saltOf(rule: MetricRule, event: TelemetryEvent, arrival: number, partition: number): number | undefined {
    if (this.hot.size === 0) return undefined;
    const hot = this.hot.get(`${rule.name}\t${JSON.stringify(rule.groupBy.map((name) => dimensionValue(event, name)))}`);
    if (!hot || arrival < hot.from || (hot.until !== undefined && arrival >= hot.until)) return undefined;
    return partition % hot.salts;
  }

  private add(rule: MetricRule, event: TelemetryEvent, partials: Map<string, WindowPartial>, watermark: number, salt?: number): number {
    for (const tag in rule.where) if (event.tags[tag] !== rule.where[tag]) return Outcome.Unmatched;
    const value = rule.value === undefined ? 0 : event.values[rule.value];
    if (value === undefined) return Outcome.Unmatched;
    const dimValues = rule.groupBy.map((name) => dimensionValue(event, name));
    const dimsId = JSON.stringify(dimValues);
    let outcome: number = Outcome.TooLate;
    for (const window of rule.windows) {
      for (const start of windowStarts(window, event.ts)) {
        if (start + window.sizeMs + rule.latenessMs + rule.horizonMs <= watermark) continue;
        outcome = Outcome.Aggregated;
        const windowKey = actorKey(rule.name, window.id, start, dimsId);
        const key = salt === undefined ? windowKey : saltedKey(windowKey, salt);
        let partial = partials.get(key);
        if (!partial) {
          const dims: Record<string, string> = {};
          rule.groupBy.forEach((name, i) => (dims[name] = dimValues[i]!));
          partial = { key, metric: rule.name, window: window.id, start, end: start + window.sizeMs, dims, agg: emptyAgg() };
          if (rule.states.length > 0) partial.states = {};
          partials.set(key, partial);
          if (salt !== undefined) {
            // The window itself hears which sub-actors have its events, in the same batch.
            let marker = partials.get(windowKey);
            if (!marker) partials.set(windowKey, (marker = { key: windowKey, metric: rule.name, window: window.id, start, end: start + window.sizeMs, dims, agg: emptyAgg() }));
            if (!(marker.salts ??= []).includes(salt)) marker.salts.push(salt);
          }
        }
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

/** A missing tag groups under the empty string. `source` is the event's source unless a tag says otherwise. */
function dimensionValue(event: TelemetryEvent, name: string): string {
  return event.tags[name] ?? (name === "source" ? event.source : "");
}

import { shardOf } from "../cluster/shards.js";
import { addValue, emptyAgg, type BasicAgg } from "./aggregates.js";
import type { TelemetryEvent } from "./event.js";
import type { MetricRule } from "./rules.js";
import { windowStarts } from "./windows.js";

/** The combined contribution of one batch of events to one window actor. */
export interface WindowPartial {
  key: string;
  metric: string;
  window: string;
  start: number;
  end: number;
  dims: Record<string, string>;
  agg: BasicAgg;
}

export interface RoutedBatch {
  /** Partials per shard, one per actor key. */
  byShard: Map<number, WindowPartial[]>;
  /** Events that matched at least one rule. */
  matched: number;
}

/**
 * The router's pure core: matches events to rules, assigns event-time windows and combines
 * everything that goes to the same actor within the batch, so one message per shard carries a
 * whole batch's worth of work.
 */
export class Router {
  private byKind = new Map<string, MetricRule[]>();

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

  route(events: readonly TelemetryEvent[]): RoutedBatch {
    const partials = new Map<string, WindowPartial>();
    let matched = 0;
    const any = this.byKind.get("*") ?? [];
    for (const event of events) {
      let hit = false;
      const rules = this.byKind.get(event.kind);
      if (rules) for (const rule of rules) hit = this.add(rule, event, partials) || hit;
      for (const rule of any) hit = this.add(rule, event, partials) || hit;
      if (hit) matched++;
    }
    const byShard = new Map<number, WindowPartial[]>();
    for (const partial of partials.values()) {
      const shard = shardOf(partial.key, this.shardCount);
      const list = byShard.get(shard);
      if (list) list.push(partial);
      else byShard.set(shard, [partial]);
    }
    return { byShard, matched };
  }

  private add(rule: MetricRule, event: TelemetryEvent, partials: Map<string, WindowPartial>): boolean {
    for (const tag in rule.where) if (event.tags[tag] !== rule.where[tag]) return false;
    const value = rule.value === undefined ? 0 : event.values[rule.value];
    if (value === undefined) return false;
    const dimValues = rule.groupBy.map((name) => dimensionValue(event, name));
    const dimsId = JSON.stringify(dimValues);
    for (const window of rule.windows) {
      for (const start of windowStarts(window, event.ts)) {
        const key = actorKey(rule.name, window.id, start, dimsId);
        let partial = partials.get(key);
        if (!partial) {
          const dims: Record<string, string> = {};
          rule.groupBy.forEach((name, i) => (dims[name] = dimValues[i]!));
          partial = { key, metric: rule.name, window: window.id, start, end: start + window.sizeMs, dims, agg: emptyAgg() };
          partials.set(key, partial);
        }
        addValue(partial.agg, value);
      }
    }
    return true;
  }
}

/** A missing tag groups under the empty string. `source` is the event's source unless a tag says otherwise. */
function dimensionValue(event: TelemetryEvent, name: string): string {
  return event.tags[name] ?? (name === "source" ? event.source : "");
}

/** Actor key of one window series: unambiguous for any dimension values. */
export function actorKey(metric: string, window: string, start: number, dimsId: string): string {
  return `${metric}\t${window}\t${start}\t${dimsId}`;
}

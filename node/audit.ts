import { actorKey } from "../actors/actor-keys.js";
import type { WindowPartial } from "../actors/router.js";
import { emptyAgg } from "../actors/aggregates.js";
import { parseRule, type MetricRule } from "../actors/rules.js";

/**
 * The audit is a built-in metric, so it is exactly-once like every other: per minute of arrival
 * (JetStream's stored time of the event message), how many events were accepted and what became
 * of them. For every minute: accepted = aggregated + unmatched + duplicates + dlq.
 *
 * `folded` is informational, outside that identity: events a shard folded into a metric's
 * `__other__` series under its `maxSeries` (they are aggregated too, under other dims). The shard
 * does not know arrival times, so it counts them in the minute its window starts in (event time).
 */
export const auditMetric = "_audit";
export const auditCounters = ["accepted", "aggregated", "unmatched", "duplicates", "dlq"] as const;
export type AuditCounter = (typeof auditCounters)[number];

export const auditRule: MetricRule = parseRule({
  name: auditMetric,
  kind: "_audit",
  groupBy: ["counter"],
  aggregates: ["count"],
  window: "1m",
  lateness: "1m",
  horizon: "1d",
});

const minute = 60_000;

/** Tallies one batch's audit counts per arrival minute, as partials for the audit's window actors. */
export class AuditTally {
  private readonly counts = new Map<number, Record<AuditCounter, number>>();

  add(arrivedAtMs: number, counter: AuditCounter, n = 1): void {
    if (n === 0) return;
    const start = arrivedAtMs - (arrivedAtMs % minute);
    let c = this.counts.get(start);
    if (!c) {
      c = { accepted: 0, aggregated: 0, unmatched: 0, duplicates: 0, dlq: 0 };
      this.counts.set(start, c);
    }
    c[counter] += n;
  }

  partials(): WindowPartial[] {
    const out: WindowPartial[] = [];
    for (const [start, counts] of this.counts) {
      for (const counter of auditCounters) if (counts[counter] > 0) out.push(auditPartial(counter, start, counts[counter]));
    }
    return out;
  }
}

/** The audit partial for `n` events folded into `__other__` in a window that starts at `windowStart`. */
export function foldedAudit(windowStart: number, n: number): WindowPartial {
  return auditPartial("folded", windowStart - (((windowStart % minute) + minute) % minute), n);
}

function auditPartial(counter: AuditCounter | "folded", start: number, n: number): WindowPartial {
  const agg = emptyAgg();
  agg.count = n;
  agg.min = agg.max = 0;
  return {
    key: actorKey(auditMetric, "1m", start, JSON.stringify([counter])),
    metric: auditMetric,
    window: "1m",
    start,
    end: start + minute,
    dims: { counter },
    agg,
  };
}

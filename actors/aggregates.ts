/**
 * The basic aggregates as one mergeable state (a commutative monoid: `merge` is associative and
 * commutative, `emptyAgg` is its identity). Sums are IEEE doubles: exact for integer values up to
 * 2^53, otherwise subject to ordinary floating-point rounding.
 */
export interface BasicAgg {
  count: number;
  sum: number;
  min: number;
  max: number;
}

export const basicAggregateNames = ["count", "sum", "min", "max", "avg", "rate"] as const;
export type BasicAggregateName = (typeof basicAggregateNames)[number];

export function isBasicAggregate(name: string): name is BasicAggregateName {
  return (basicAggregateNames as readonly string[]).includes(name);
}

export function emptyAgg(): BasicAgg {
  return { count: 0, sum: 0, min: Infinity, max: -Infinity };
}

export function addValue(agg: BasicAgg, value: number): void {
  agg.count++;
  agg.sum += value;
  if (value < agg.min) agg.min = value;
  if (value > agg.max) agg.max = value;
}

export function mergeAgg(into: BasicAgg, from: BasicAgg): void {
  // An empty partial (a marker) has no min or max: ±Infinity here, null once it went through JSON.
  if (from.count === 0) return;
  into.count += from.count;
  into.sum += from.sum;
  if (from.min < into.min) into.min = from.min;
  if (from.max > into.max) into.max = from.max;
}

/**
 * The basic values a rule asked for, as they appear in results (`null` where undefined, e.g. min
 * of nothing). `rate` is events per second over the window's size. Other names are skipped.
 */
export function aggValues(agg: BasicAgg, names: readonly string[], windowMs = 60_000): Record<string, number | null> {
  const out: Record<string, number | null> = {};
  for (const name of names) {
    switch (name) {
      case "rate":
        out.rate = agg.count / (windowMs / 1000);
        break;
      case "count":
        out.count = agg.count;
        break;
      case "sum":
        out.sum = agg.sum;
        break;
      case "min":
        out.min = agg.count ? agg.min : null;
        break;
      case "max":
        out.max = agg.count ? agg.max : null;
        break;
      case "avg":
        out.avg = agg.count ? agg.sum / agg.count : null;
        break;
    }
  }
  return out;
}

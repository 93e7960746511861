import { parseDuration } from "../actors/durations.js";
import { allWindows } from "../actors/rollups.js";
import type { MetricRule } from "../actors/rules.js";

/**
 * How long aggregates are kept, by window size: the first entry whose size is at least the
 * window's applies. `Infinity` keeps forever. Raw events are the events stream's own `max_age`.
 */
export type RetentionPolicy = [maxWindowMs: number, keepMs: number][];

const day = 86_400_000;

/** 1-minute (and finer) windows 30 days, up to 1 hour 1 year, longer ones forever. */
export const defaultRetention: RetentionPolicy = [
  [60_000, 30 * day],
  [3_600_000, 365 * day],
  [Infinity, Infinity],
];

/** Parses `1m=30d,1h=1y,1d=forever`: window size = how long its aggregates are kept. */
export function parseRetention(text: string): RetentionPolicy {
  const policy: RetentionPolicy = text.split(",").map((pair) => {
    const [size, keep] = pair.split("=").map((s) => s?.trim());
    if (!size || !keep) throw new Error(`retention takes size=duration pairs, like 1m=30d,1h=1y,1d=forever (not ${JSON.stringify(pair)})`);
    const keepMs = keep === "forever" ? Infinity : /^\d+y$/.test(keep) ? Number(keep.slice(0, -1)) * 365 * day : parseDuration(keep);
    return [parseDuration(size), keepMs];
  });
  return policy.sort((a, b) => a[0] - b[0]);
}

export function keepFor(policy: RetentionPolicy, windowMs: number): number {
  return policy.find(([maxWindowMs]) => windowMs <= maxWindowMs)?.[1] ?? Infinity;
}

/** Every (metric, window, cutoff) whose older results are due for deletion at `now`. */
export function expiredRanges(rules: readonly MetricRule[], policy: RetentionPolicy, now: number) {
  const out: { metric: string; window: string; cutoff: number }[] = [];
  for (const rule of rules) {
    // Rollup windows are kept by their own size, like windows routed directly.
    for (const window of allWindows(rule)) {
      const keep = keepFor(policy, window.sizeMs);
      if (Number.isFinite(keep)) out.push({ metric: rule.name, window: window.id, cutoff: now - keep - window.sizeMs });
    }
  }
  return out;
}

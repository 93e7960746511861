import type { TelemetryEvent } from "../actors/event.js";

/** Deterministic pseudo-random numbers (mulberry32), so a failing run can be replayed. */
export { mulberry32 as prng } from "../sim/fleet.js";

/** A plain, independent re-computation of what Tally should finalize: no code shared with the product. */
export interface ExpectedRule {
  name: string;
  kind: string;
  value?: string;
  groupBy: string[];
  windows: { id: string; size: number; slide: number }[];
}

export interface ExpectedWindow {
  count: number;
  sum: number;
  min: number;
  max: number;
}

/** Key: `metric|window|start|{"dim":"value"}` → aggregate over the de-duplicated events. */
export function expectedWindows(rules: ExpectedRule[], events: TelemetryEvent[]): Map<string, ExpectedWindow> {
  const seen = new Set<string>();
  const out = new Map<string, ExpectedWindow>();
  for (const e of events) {
    if (seen.has(e.id)) continue;
    seen.add(e.id);
    for (const rule of rules) {
      if (rule.kind !== "*" && rule.kind !== e.kind) continue;
      const v = rule.value === undefined ? 0 : e.values[rule.value];
      if (v === undefined) continue;
      const dims: Record<string, string> = {};
      for (const g of rule.groupBy) dims[g] = e.tags[g] ?? (g === "source" ? e.source : "");
      for (const w of rule.windows) {
        // Every window [start, start + size) with start a multiple of slide that contains ts.
        for (let start = Math.floor(e.ts / w.slide) * w.slide; start > e.ts - w.size; start -= w.slide) {
          const key = `${rule.name}|${w.id}|${start}|${JSON.stringify(dims)}`;
          const agg = out.get(key) ?? { count: 0, sum: 0, min: Infinity, max: -Infinity };
          agg.count++;
          agg.sum += v;
          agg.min = Math.min(agg.min, v);
          agg.max = Math.max(agg.max, v);
          out.set(key, agg);
        }
      }
    }
  }
  return out;
}


export function shuffle<T>(items: T[], random: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

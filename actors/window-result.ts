import type { ResultValue } from "./aggregations/aggregation.js";

/** The lifecycle of a window's result (README, "Results"). */
export type ResultStatus = "provisional" | "final" | "corrected";

/** Which window of which series: what partials, window state and results all carry. */
export interface WindowIdentity {
  metric: string;
  /** The window id from the rule: `1m`, `10s`, `5m/30s`. */
  window: string;
  start: number;
  end: number;
  dims: Record<string, string>;
}

/** What a window actor emits; sinks keep the latest by `(key, revision)`. */
export interface WindowResult extends WindowIdentity {
  /** The window actor's key: stable identity of (metric, window, start, dims). */
  key: string;
  status: ResultStatus;
  /** 0 while provisional, 1 when final, +1 for every correction after that. */
  revision: number;
  /** Events aggregated into this window so far. */
  eventCount: number;
  /** Of those, how many arrived after the window was final. */
  lateCount: number;
  /** The event-time watermark this result was computed under (ms). */
  watermark: number;
  values: Record<string, ResultValue>;
  /** The shard that computed it and that shard's ownership epoch: sinks refuse a stale epoch. */
  shard?: number;
  epoch?: number;
}

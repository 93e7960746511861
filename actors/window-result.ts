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

/**
 * A result as its JSON text, written straight from a window table's row (README, "Many
 * windows": at a minute's close, and for every provisional result of a new window when a
 * million open a minute, a result object, its dims and values objects and their stringifying
 * per window were a large part of the node's work). `json` is exactly what `JSON.stringify`
 * gives for the same `WindowResult` (its `shard` and `epoch` from the environment's
 * `encodedStamp`); the other fields are what sinks route it by.
 */
export interface EncodedResult {
  key: string;
  metric: string;
  window: string;
  status: ResultStatus;
  revision: number;
  json: string;
}

import type { WindowResult } from "../actors/window-result.js";

/** A provisional count result of one window, with `over` replacing any field (live-view tests). */
export function windowResult(over: Partial<WindowResult> = {}): WindowResult {
  return {
    key: "devices|10s|0|a",
    metric: "devices",
    window: "10s",
    start: 0,
    end: 10_000,
    dims: { device: "a" },
    status: "provisional",
    revision: 0,
    eventCount: 1,
    lateCount: 0,
    watermark: 0,
    values: { count: 1 },
    shard: 3,
    epoch: 10,
    ...over,
  };
}

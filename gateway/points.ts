import type { WindowResult } from "../actors/window-result.js";

/** A window result as the public API shows it (README, "Query"). */
export function toPoint(r: WindowResult) {
  return {
    start: r.start,
    end: r.end,
    dims: r.dims,
    status: r.status,
    revision: r.revision,
    eventCount: r.eventCount,
    lateCount: r.lateCount,
    watermark: Number.isFinite(r.watermark) ? r.watermark : null,
    values: r.values,
  };
}

import type { TelemetryEvent } from "../actors/event.js";
import { Router } from "../actors/router.js";
import type { MetricRule } from "../actors/rules.js";
import type { WindowShard } from "../actors/window-shard.js";

/**
 * Opens `windows` count windows of `rule` (grouped by `device`) in `shard`, all of the minute
 * starting at `start`: one event per device, routed and applied 10k at a time, as a router would.
 */
export function openDeviceWindows(shard: WindowShard, rule: MetricRule, windows: number, start: number): void {
  const router = new Router([rule], 1);
  for (let from = 0; from < windows; from += 10_000) {
    const events: TelemetryEvent[] = [];
    for (let i = from; i < Math.min(windows, from + 10_000); i++) {
      const device = `dev-${String(i).padStart(7, "0")}`;
      events.push({ id: device, ts: start + 1_000, source: device, kind: "status", tags: { device }, values: {} });
    }
    shard.applyBatch("0", from + events.length, router.route(events).byShard.get(0) ?? []);
  }
}

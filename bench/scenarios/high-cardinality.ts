/**
 * High cardinality: one count per `device` tag value, with every event of the minute going to the
 * next of N devices, so N count windows are active at once: 1M in the full suite (the issue's
 * scale; it needs ≥ 23k events/s to open them all within the minute), 5k in the smoke suite.
 * Reports RSS per active window.
 */
import type { Suite } from "../suite.js";
import { protoBatch } from "./robots.js";

export async function highCardinality(suite: Suite): Promise<void> {
  const devices = suite.size(1_000_000, 5_000);
  const { text, ms } = suite.lateness;
  await suite.tally({
    scenario: "high cardinality",
    variant: `${devices / 1000}k devices per minute, count`,
    rules: [{ name: "devices", kind: "status", groupBy: ["device"], aggregates: ["count"], window: "1m", lateness: text }],
    workload: { ...protoBatch(10_000), devices },
    metric: "devices",
    latenessMs: ms,
    measureMs: 40_000,
    oneWindow: true,
  });
}

/**
 * Late and duplicated: 20% of events carry an event time 3–8 s behind the others (behind the
 * watermark, within the 10 s lateness), and 10% of messages are published twice (same ids).
 * events/s counts every event taken in, duplicates included; the JSON has the aggregated rate.
 */
import type { Suite } from "../suite.js";
import { protoBatch, rich, robotsRule } from "./robots.js";

export async function lateDuplicates(suite: Suite): Promise<void> {
  const latenessMs = suite.smoke ? 5_000 : 10_000;
  await suite.tally({
    scenario: "late + duplicates",
    variant: `10k sources, 20% late (${suite.smoke ? "2.5–4.5" : "3–8"} s), 10% duplicated`,
    rules: [robotsRule(rich, `${latenessMs}ms`)],
    workload: {
      ...protoBatch(10_000),
      late: suite.smoke ? { fraction: 0.2, minMs: 2_500, maxMs: 4_500 } : { fraction: 0.2, minMs: 3_000, maxMs: 8_000 },
      duplicates: 0.1,
    },
    metric: "robots",
    latenessMs,
  });
}

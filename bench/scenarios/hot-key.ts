/** Hot key: every event of a 10k-source fleet lands in one fleet-wide series (a rule without groupBy). */
import type { Suite } from "../suite.js";
import { protoBatch } from "./robots.js";

export async function hotKey(suite: Suite): Promise<void> {
  const { text, ms } = suite.lateness;
  await suite.tally({
    scenario: "hot key",
    variant: "10k sources, 1 series, count/avg/p99",
    rules: [{ name: "fleet", kind: "status", value: "cycle", aggregates: ["count", "avg", "p99"], window: "1m", lateness: text }],
    workload: protoBatch(10_000),
    metric: "fleet",
    latenessMs: ms,
  });
}

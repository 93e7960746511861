/**
 * Robots: a fleet of 10k or 100k sources, 1-minute windows per site, published as single JSON
 * events, JSON batches (100 events of one source per message) and protobuf batches (1,000 events
 * of one partition's sources per message). Two rule sets: count+avg, and count/avg/p99/
 * distinct:source/top10:code. The StatsD and naive-Redis baselines take the same events.
 */
import type { Suite, TallyCase } from "../suite.js";
import type { Workload } from "../workload.js";

export const countAvg = ["count", "avg"];
export const rich = ["count", "avg", "p99", "distinct:source", "top10:code"];

export const robotsRule = (aggregates: string[], lateness: string) => ({ name: "robots", kind: "status", value: "cycle", groupBy: ["site"], aggregates, window: "1m", lateness });

export const jsonSingle = (sources: number): Workload => ({ sources, encoding: "json", batch: 1, grouping: "source" });
export const jsonBatch = (sources: number): Workload => ({ sources, encoding: "json", batch: 100, grouping: "source" });
export const protoBatch = (sources: number): Workload => ({ sources, encoding: "protobuf", batch: 1000, grouping: "partition" });

export function robotsCase(suite: Suite, sources: number, aggregates: string[], workload: Workload): TallyCase {
  return {
    scenario: "robots",
    variant: `${sources / 1000}k sources, ${aggregates === rich ? "count/avg/p99/distinct/top10" : "count+avg"}`,
    rules: [robotsRule(aggregates, suite.lateness.text)],
    workload,
    metric: "robots",
    latenessMs: suite.lateness.ms,
  };
}

export async function robots(suite: Suite): Promise<void> {
  for (const workload of [jsonSingle(10_000), jsonBatch(10_000), protoBatch(10_000)]) await suite.tally(robotsCase(suite, 10_000, countAvg, workload));
  if (!suite.smoke) {
    await suite.tally(robotsCase(suite, 10_000, rich, protoBatch(10_000)));
    await suite.tally(robotsCase(suite, 100_000, rich, jsonBatch(100_000)));
    await suite.tally(robotsCase(suite, 100_000, rich, protoBatch(100_000)));
    await suite.profile(robotsCase(suite, 10_000, countAvg, protoBatch(10_000)));
  }

  // Baselines on the same events, compared with Tally's protobuf path on the same rules.
  const headline = robotsCase(suite, 10_000, countAvg, protoBatch(10_000));
  await suite.statsd(jsonSingle(10_000), false, "1 timer per event (count, mean)", headline);
  if (!suite.smoke) await suite.statsd(jsonSingle(10_000), true, "timer, timer, set, counter per event (+ p99, distinct, top codes)", robotsCase(suite, 10_000, rich, protoBatch(10_000)));
  await suite.naive(protoBatch(10_000), "1 HINCRBY per event (count only)", headline);
}

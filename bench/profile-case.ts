// One saturated robots run (10k sources, count+avg, protobuf ×1000) under `node --cpu-prof`, then a
// graceful stop: prints events/s, how long the stop took, and the node's top functions by self time.
// Run: npx tsc -p tsconfig.json && node dist/bench/profile-case.js [seconds] [--keep DIR] [--devices N]
// (--devices: the high-cardinality case instead, a count per device tag over N devices)
import { mkdtempSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { saturate, startTally } from "./harness.js";
import { summarizeProfile } from "./profile.js";
import { countAvg, protoBatch, robotsRule } from "./scenarios/robots.js";

const { values, positionals } = parseArgs({ allowPositionals: true, options: { keep: { type: "string" }, devices: { type: "string" } } });
const seconds = Number(positionals[0] ?? 15);
const dir = values.keep ?? mkdtempSync(join(tmpdir(), "tally-prof-"));
const devices = Number(values.devices ?? 0);
const rule = devices > 0 ? { name: "devices", kind: "status", groupBy: ["device"], aggregates: ["count"], window: "1m", lateness: "5s" } : robotsRule(countAvg, "5s");
const stack = await startTally({ metrics: [rule] }, { profileDir: dir });
let stopMs = 0;
try {
  const t = await saturate(stack, { workload: { ...protoBatch(10_000), devices }, idPrefix: `p${Date.now()}`, target: { nats: stack.nats.url }, tsOffsetMs: 0 }, { warmupMs: 3_000, measureMs: seconds * 1000 });
  console.log(`events/s ${Math.round(t.eventsPerSec)}`);
} finally {
  const started = Date.now();
  await stack.stop();
  stopMs = Date.now() - started;
}
console.log(`stop took ${stopMs} ms`);
const file = readdirSync(dir).find((f) => f.endsWith(".cpuprofile"));
if (!file) console.log("no profile written");
else {
  const s = summarizeProfile(join(dir, file), 25);
  console.log(`idle ${s.idlePercent}% (${join(dir, file)})`);
  for (const e of s.top) console.log(`${String(e.selfPercent).padStart(5)}% ${String(e.selfMs).padStart(7)} ms  ${e.function}  ${e.location}`);
}
process.exit(0);

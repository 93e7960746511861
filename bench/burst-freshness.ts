// Does a reconnection burst delay everyone else? Freshness of fresh events (publish → the
// provisional result that counts them) on one node, without and then with a robot flushing
// 30 minutes of buffered events at once.
// Run: make build && node dist/bench/burst-freshness.js [burstEvents=20000]
import { connect } from "@nats-io/transport-node";
import { startTestNats, startTestNode } from "../test/harness.js";

const burstEvents = Number(process.argv[2] ?? 20_000);
const nats = await startTestNats();
const node = await startTestNode(
  nats.url,
  "metrics: [{name: fresh, kind: status, groupBy: [source], aggregates: [count], window: 1m, lateness: 1m}]",
  { emitIntervalMs: 250, watermarkIntervalMs: 200, outOfOrdernessMs: 2_000, idleTimeoutMs: 5_000 },
);
const nc = await connect({ servers: nats.url });

/**
 * 50 robots publish one fresh event each every 100 ms for `ms`. An event's freshness is the time
 * from its publish to the first result of its window that counts it.
 */
let run = 0;
async function measure(ms: number, during?: () => void): Promise<number[]> {
  const fleet = `run${run++}`; // fresh series per run, so counts start at zero
  const published = new Map<string, number[]>(); // window series → publish times, in order
  const seen = new Map<string, number>(); // window series → events already visible
  const latencies: number[] = [];
  const off = node.node.onResult((r) => {
    if (r.metric !== "fresh") return;
    const series = `${r.dims.source}|${r.start}`;
    const times = published.get(series) ?? [];
    const now = Date.now();
    for (let i = seen.get(series) ?? 0; i < Math.min(r.eventCount, times.length); i++) latencies.push(now - times[i]!);
    seen.set(series, Math.max(seen.get(series) ?? 0, r.eventCount));
  });
  const end = Date.now() + ms;
  let seq = 0;
  let burstDone = !during;
  while (Date.now() < end) {
    for (let r = 0; r < 50; r++) {
      const ts = Date.now();
      const series = `${fleet}-robot-${r}|${ts - (ts % 60_000)}`;
      published.set(series, [...(published.get(series) ?? []), ts]);
      nc.publish(`telemetry.${fleet}-robot-${r}.status`, JSON.stringify({ id: `${fleet}-${r}-${seq++}`, ts }));
    }
    if (!burstDone && Date.now() > end - ms / 2) {
      during!();
      burstDone = true;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  await new Promise((r) => setTimeout(r, 2_000)); // let the last results arrive
  off();
  return latencies.sort((a, b) => a - b);
}

function burst() {
  const now = Date.now();
  const batch: unknown[] = [];
  for (let i = 0; i < burstEvents; i++) {
    batch.push({ id: `burst-${i}`, ts: now - 30 * 60_000 + Math.floor((i / burstEvents) * 29 * 60_000) });
    if (batch.length === 500) nc.publish("telemetry.offline-robot.status", JSON.stringify(batch.splice(0)));
  }
  if (batch.length) nc.publish("telemetry.offline-robot.status", JSON.stringify(batch.splice(0)));
}

const pct = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))] ?? NaN;
await measure(3_000); // warm-up
const quiet = await measure(10_000);
const withBurst = await measure(10_000, burst);
console.log(
  JSON.stringify({
    burstEvents,
    quiet: { samples: quiet.length, p50: pct(quiet, 50), p99: pct(quiet, 99) },
    withBurst: { samples: withBurst.length, p50: pct(withBurst, 50), p99: pct(withBurst, 99) },
    ratioP99: +(pct(withBurst, 99) / pct(quiet, 99)).toFixed(2),
  }),
);
await nc.close();
await node.cleanup();
await nats.cleanup();

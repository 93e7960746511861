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

/** Publishes one fresh event per robot every 100 ms for `ms`; returns publish → visible latencies. */
async function measure(ms: number, during?: () => void): Promise<number[]> {
  const sentAt = new Map<string, number>(); // robot → publish time of its latest event
  const counts = new Map<string, number>();
  const latencies: number[] = [];
  const off = node.node.onResult((r) => {
    if (r.metric !== "fresh" || r.status !== "provisional") return;
    const robot = r.dims.source!;
    const at = sentAt.get(robot);
    if (at !== undefined && r.eventCount > (counts.get(robot) ?? 0)) latencies.push(Date.now() - at);
    counts.set(robot, r.eventCount);
    sentAt.delete(robot);
  });
  const end = Date.now() + ms;
  let seq = 0;
  let burstDone = !during;
  while (Date.now() < end) {
    const minute = Math.floor(Date.now() / 60_000);
    for (let r = 0; r < 50; r++) {
      const robot = `fresh-${minute}-${r}`; // a new series each minute keeps counts monotone per result
      if (!sentAt.has(robot)) sentAt.set(robot, Date.now());
      nc.publish(`telemetry.${robot}.status`, JSON.stringify({ id: `${robot}-${seq++}`, ts: Date.now() }));
    }
    if (!burstDone && Date.now() > end - ms / 2) {
      during!();
      burstDone = true;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
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

// Scaling out on one machine (2 cores here, so this measures the cluster's overhead more than its
// gain): the same saturating load through 1, 2 and 3 nodes in the same run; the time from a
// `kill -9` of one of three nodes to its shards emitting results again from their new owners; and
// how many shards move when a 4th node joins 3.
// Run: make build && node dist/bench/cluster-scale.js [measureSeconds=10]
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { Membership, type MemberInfo } from "../cluster/membership.js";
import { desiredOwners } from "../cluster/placement.js";
import { resultsOf } from "../node/provisional-batcher.js";
import { tempDir } from "../test/harness.js";
import { NatsProcess, NodeProcess } from "../test/processes.js";
import { saturate, sleep, startTally } from "./harness.js";
import { protoBatch, robotsRule, countAvg } from "./scenarios/robots.js";

const measureMs = Number(process.argv[2] ?? 10) * 1000;
const rules = { metrics: [robotsRule(countAvg, "5s")] };

const throughput: Record<string, number> = {};
for (const nodes of process.argv[3] === "failover-only" ? [] : [1, 2, 3]) {
  const stack = await startTally(rules, { nodes });
  try {
    const spec = { workload: protoBatch(10_000), idPrefix: String.fromCharCode(96 + nodes), target: { nats: stack.nats.url }, tsOffsetMs: 0 };
    const t = await saturate(stack, spec, { warmupMs: 3_000, measureMs });
    throughput[`${nodes} node${nodes > 1 ? "s" : ""}`] = Math.round(t.eventsPerSec);
    console.error(`${nodes} node(s): ${Math.round(t.eventsPerSec)} events/s`);
  } finally {
    await stack.stop();
  }
}

// Failover and rebalancing, on a cluster of processes with a light load running.
const dir = tempDir("tally-cluster-bench-");
const nats = await NatsProcess.start({ dir: join(dir.path, "nats") });
const rulesFile = join(dir.path, "rules.json");
writeFileSync(rulesFile, JSON.stringify({ metrics: [{ name: "per_robot", kind: "status", groupBy: ["source"], aggregates: ["count"], window: "1s", lateness: "500ms" }] }));
const args = ["--heartbeat-ttl", "3s", "--rebalance-interval", "500ms", "--out-of-orderness", "500ms", "--idle-timeout", "1s"];
const start = (name: string) => NodeProcess.start({ natsUrl: nats.url, dataDir: join(dir.path, name), rulesFile, extraArgs: args });
const nc = await connect({ servers: nats.url });
const membership = await Membership.open(nc);
const owners = async () => new Map((await membership.members()).flatMap((m: MemberInfo) => m.shards.map((s) => [s, m.id] as const)));
/** Waits until every shard is where placement wants it for these members (moves are capped per round). */
const settled = async (ids: string[]) => {
  const shards = Array.from({ length: 32 }, (_, i) => `shard.${i}`);
  const want = desiredOwners(shards, ids);
  for (;;) {
    const o = await owners();
    if (o.size === 32 && [...o].every(([shard, id]) => want.get(`shard.${shard}`) === id)) return o;
    await sleep(100);
  }
};
const load = setInterval(() => {
  for (let r = 0; r < 200; r++) nc.publish(`telemetry.robot-${r}.status`, JSON.stringify({ id: `${Date.now()}-${r}`, ts: Date.now() }));
}, 50);

const a = await start("a");
const b = await start("b");
const c = await start("c");
const three = await settled([a.nodeId!, b.nodeId!, c.nodeId!]);
const d = await start("d");
const four = await settled([a.nodeId!, b.nodeId!, c.nodeId!, d.nodeId!]);
const moved = [...four].filter(([shard, id]) => three.get(shard) !== id).length;
const movedToNew = [...four].filter(([shard, id]) => three.get(shard) !== id && id === d.nodeId).length;

// kill -9 one node; its shards emit again once their new owner has restored them.
const victim = b;
const orphaned = new Set([...four].filter(([, id]) => id === victim.nodeId).map(([shard]) => shard));
const emitting = new Set<number>();
/** Per shard, the newest epoch seen before the kill: only results of a later one are the new owner's. */
const epochBefore = new Map<number, number>();
let killedAt = 0;
let allEmittingAt = 0;
const sub = nc.subscribe("results.>", {
  callback: (_, m) => {
    for (const r of resultsOf(m.string())) {
      if (r.shard === undefined || r.epoch === undefined || !orphaned.has(r.shard)) continue;
      if (!killedAt) {
        epochBefore.set(r.shard, Math.max(r.epoch, epochBefore.get(r.shard) ?? 0));
        continue;
      }
      if (r.epoch <= (epochBefore.get(r.shard) ?? 0)) continue;
      emitting.add(r.shard);
      if (emitting.size === orphaned.size && !allEmittingAt) allEmittingAt = Date.now();
    }
  },
});
await sleep(2_000);
killedAt = Date.now();
await victim.kill9();
await settled([a.nodeId!, c.nodeId!, d.nodeId!]);
const retakenAt = Date.now();
while (!allEmittingAt) await sleep(20);

clearInterval(load);
sub.unsubscribe();
const report = {
  machine: "2 cores; nats-server, the nodes and the load generator share them",
  eventsPerSec: throughput,
  ratioTo1Node: Object.fromEntries(Object.entries(throughput).map(([k, v]) => [k, +(v / (throughput["1 node"] ?? v)).toFixed(2)])),
  kill9: { heartbeatTtl: "3s", orphanedShards: orphaned.size, claimedAfterMs: retakenAt - killedAt, allEmittingAfterMs: allEmittingAt - killedAt },
  fourthNodeJoins: { shards: 32, moved, movedToNewNode: movedToNew },
};
console.log(JSON.stringify(report, null, 2));
await nc.close();
for (const n of [a, c, d]) await n.stop();
await nats.stop();
dir.remove();

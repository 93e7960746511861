import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import type { TelemetryEvent } from "../actors/event.js";
import { Membership } from "../cluster/membership.js";
import { nodeDefaults } from "../node/tally-node.js";
import { streams } from "../node/streams.js";
import { converge, readStream, ReliablePublisher, revisionConflicts, type WantedValues } from "./exactness.js";
import { expectedWindows, prng, type ExpectedRule } from "./expected.js";
import { eventually, tempDir } from "./harness.js";
import { NatsCluster, NodeProcess } from "./processes.js";

/**
 * Tally on a 3-server NATS cluster with every stream and bucket replicated 3 times: a Tally node
 * is killed with -9 under load; the other node takes its shards over from what the replicated
 * streams hold, and every window is exact. (Killing a NATS server as well is not in this test:
 * after a server restart some consumers' requests kept timing out for over a minute here, so
 * windows stayed uncorrected; see README "Limits".)
 */

const rulesYaml = `
metrics:
  - name: temp
    kind: status
    value: temperature
    groupBy: [site]
    aggregates: [count, sum, min, max, avg]
    window: 5s
    lateness: 2s
    horizon: 60s
`;
const rules: ExpectedRule[] = [{ name: "temp", kind: "status", value: "temperature", groupBy: ["site"], windows: [{ id: "5s", size: 5_000, slide: 5_000 }] }];
const wanted: WantedValues = (_key, want) => ({ count: want.count, sum: want.sum, min: want.min, max: want.max, avg: want.sum / want.count });

const nodeArgs = ["--replicas", "3", "--max-moves", "8", "--out-of-orderness", "1s", "--idle-timeout", "1s", "--checkpoint-interval", "500ms", "--heartbeat-ttl", "3s", "--rebalance-interval", "500ms"];
const units = nodeDefaults.shards + nodeDefaults.partitions;

let dir: ReturnType<typeof tempDir>;
let cluster: NatsCluster;
let nc: NatsConnection;
const nodes: NodeProcess[] = [];

before(async () => {
  dir = tempDir("tally-nats-cluster-");
  cluster = await NatsCluster.start(join(dir.path, "nats"));
  writeFileSync(join(dir.path, "rules.yaml"), rulesYaml);
  nc = await connect({ servers: cluster.url.split(","), maxReconnectAttempts: -1 });
});

after(async () => {
  await nc?.close().catch(() => undefined);
  for (const node of nodes) await node.stop().catch(() => undefined);
  await cluster?.stop().catch(() => undefined);
  dir?.remove();
});

async function owners(): Promise<Map<string, number>> {
  const members = await (await Membership.open(nc, 5_000, 3)).members();
  return new Map(members.map((m) => [m.id, m.shards.length + m.partitions.length]));
}

test("on a 3-server NATS cluster with R3 streams: a Tally node killed with -9 under load, every window exact", async () => {
  for (const name of ["a", "b"]) {
    nodes.push(await NodeProcess.start({ natsUrl: cluster.url, dataDir: join(dir.path, name), rulesFile: join(dir.path, "rules.yaml"), extraArgs: nodeArgs }));
  }
  const [a, b] = nodes as [NodeProcess, NodeProcess];
  await eventually(async () => {
    const owned = await owners();
    return owned.get(a.nodeId!)! > 0 && owned.get(b.nodeId!)! > 0 && owned.get(a.nodeId!)! + owned.get(b.nodeId!)! === units ? true : undefined;
  }, 60_000, "both nodes owning units");
  for (const stream of Object.values(streams)) assert.equal((await (await jetstreamManager(nc)).streams.info(stream)).config.num_replicas, 3, stream);

  const random = prng(77);
  const publisher = new ReliablePublisher(nc, "natscluster");
  const valid: TelemetryEvent[] = [];
  let seq = 0;
  const chaos: { at: number; act: () => Promise<unknown> }[] = [{ at: 6_000, act: () => a.kill9() }];
  const start = Date.now();
  const pending: Promise<unknown>[] = [];
  while (Date.now() - start < 18_000) {
    while (chaos.length > 0 && chaos[0]!.at <= Date.now() - start) pending.push(chaos.shift()!.act());
    const now = Date.now();
    for (let robot = 0; robot < 12; robot++) {
      const source = `robot-${robot}`;
      const e: TelemetryEvent = { id: `${source}-${seq++}`, ts: now - Math.floor(random() * 800), source, kind: "status", tags: { site: `s${robot % 3}` }, values: { temperature: Math.floor(random() * 100) } };
      valid.push(e);
      const body = JSON.stringify({ id: e.id, ts: e.ts, tags: e.tags, values: e.values });
      publisher.publish(`telemetry.${source}.status`, body);
      if (random() < 0.1) publisher.publish(`telemetry.${source}.status`, body);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  await Promise.all(pending);
  await publisher.settled();
  await eventually(async () => ((await owners()).get(b.nodeId!) === units ? true : undefined), 30_000, "the surviving node owning every unit");

  const expected = expectedWindows(rules, valid);
  const diffs = await converge(b.url, rules, expected, wanted, { from: start - 60_000, to: Date.now() + 60_000 });
  assert.deepEqual(diffs, [], `node ${b.nodeId} differs from the batch computation:\n${diffs.slice(0, 20).join("\n")}\n--- its log ---\n${b.log()}`);
  assert.deepEqual(revisionConflicts(await readStream(nc, streams.results)), []);
});

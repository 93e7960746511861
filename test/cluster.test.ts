import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import type { TelemetryEvent } from "../actors/event.js";
import { Membership, type MemberInfo } from "../cluster/membership.js";
import { HotKeysStore } from "../node/hot-keys-store.js";
import { decodeMailbox } from "../node/mailbox-codec.js";
import { nodeDefaults } from "../node/tally-node.js";
import { streams } from "../node/streams.js";
import { converge, readStream, ReliablePublisher, revisionConflicts, type WantedValues } from "./exactness.js";
import { expectedWindows, prng, type ExpectedRule } from "./expected.js";
import { eventually, tempDir } from "./harness.js";
import { NatsProcess, NodeProcess } from "./processes.js";

/**
 * Scale-out under load: two nodes (separate processes) share the shards and partitions; a third
 * joins, one leaves gracefully, one is killed with -9 and stays dead until the load is over. One
 * series (`fleet`) takes every event: it is salted over sub-actors once hot, and unsalted once
 * quiet. Every window ends exactly equal to a batch computation, on every node asked, and no
 * (window, revision) ever had two contents.
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
  - name: per_robot
    kind: status
    groupBy: [source]
    aggregates: [count]
    window: 5s
    lateness: 2s
    horizon: 60s
  - name: fleet
    kind: status
    value: temperature
    aggregates: [count, sum, min, max, avg]
    window: 5s
    lateness: 2s
    horizon: 60s
`;
const rules: ExpectedRule[] = [
  { name: "temp", kind: "status", value: "temperature", groupBy: ["site"], windows: [{ id: "5s", size: 5_000, slide: 5_000 }] },
  { name: "per_robot", kind: "status", groupBy: ["source"], windows: [{ id: "5s", size: 5_000, slide: 5_000 }] },
  // Every event of the fleet in one series: the hot key.
  { name: "fleet", kind: "status", value: "temperature", groupBy: [], windows: [{ id: "5s", size: 5_000, slide: 5_000 }] },
];
const wanted: WantedValues = (key, want): Record<string, number> =>
  !key.startsWith("per_robot|") ? { count: want.count, sum: want.sum, min: want.min, max: want.max, avg: want.sum / want.count } : { count: want.count };

const nodeArgs = [
  ["--out-of-orderness", "1s"],
  ["--idle-timeout", "1s"],
  ["--checkpoint-interval", "500ms"],
  ["--heartbeat-ttl", "3s"],
  ["--rebalance-interval", "500ms"],
  ["--hot-threshold", "100", "--hot-salts", "3", "--hot-cool-after", "2s"],
].flat();

const runMs = 26_000;
const robots = 24;
const units = nodeDefaults.shards + nodeDefaults.partitions;

let dir: ReturnType<typeof tempDir>;
let nats: NatsProcess;
let nc: NatsConnection;
const nodes: NodeProcess[] = [];

async function startNode(name: string): Promise<NodeProcess> {
  const node = await NodeProcess.start({ natsUrl: nats.url, dataDir: join(dir.path, name), rulesFile: join(dir.path, "rules.yaml"), extraArgs: nodeArgs });
  nodes.push(node);
  return node;
}

async function members(): Promise<MemberInfo[]> {
  return (await Membership.open(nc)).members();
}

/** Every shard and partition owned by exactly one live node, and each of `ids` (only they) owning some shards. */
async function ownedBy(ids: (string | undefined)[]): Promise<boolean> {
  const live = await members();
  const owning = live.filter((m) => m.shards.length + m.partitions.length > 0);
  if (!ids.every((id) => live.some((m) => m.id === id && m.shards.length > 0))) return false;
  const shards = owning.flatMap((m) => m.shards);
  const partitions = owning.flatMap((m) => m.partitions);
  return (
    owning.every((m) => ids.includes(m.id)) &&
    new Set(shards).size === shards.length &&
    new Set(partitions).size === partitions.length &&
    shards.length + partitions.length === units
  );
}

before(async () => {
  dir = tempDir("tally-cluster-");
  nats = await NatsProcess.start({ dir: join(dir.path, "nats") });
  writeFileSync(join(dir.path, "rules.yaml"), rulesYaml);
  nc = await connect({ servers: nats.url, maxReconnectAttempts: -1 });
});

after(async () => {
  await nc?.close().catch(() => undefined);
  for (const node of nodes) await node.stop().catch(() => undefined);
  await nats?.stop().catch(() => undefined);
  dir?.remove();
});

test("add a node, stop one gracefully, kill -9 another, under load: every window exact on every node", async () => {
  const a = await startNode("a");
  const b = await startNode("b");
  await eventually(async () => ((await ownedBy([a.nodeId, b.nodeId])) ? true : undefined), 60_000, "both nodes owning every unit");

  const hotKeys = await HotKeysStore.open(nc);
  const random = prng(4242);
  const publisher = new ReliablePublisher(nc, "cluster");
  const valid: TelemetryEvent[] = [];
  const sites = ["berlin", "austin", "osaka"];
  let seq = 0;
  let c: NodeProcess | undefined;
  const chaos: { at: number; act: () => Promise<unknown> }[] = [
    { at: 5_000, act: async () => (c = await startNode("c")) },
    { at: 11_000, act: () => b.stop() },
    { at: 17_000, act: () => a.kill9() },
  ];
  const start = Date.now();
  const pending: Promise<unknown>[] = [];
  while (Date.now() - start < runMs) {
    while (chaos.length > 0 && chaos[0]!.at <= Date.now() - start) pending.push(chaos.shift()!.act());
    const now = Date.now();
    for (let robot = 0; robot < robots; robot++) {
      const source = `robot-${robot}`;
      const ts = random() < 0.05 ? now - 3_000 - Math.floor(random() * 10_000) : now - Math.floor(random() * 800);
      const e: TelemetryEvent = { id: `${source}-${seq++}`, ts, source, kind: "status", tags: { site: sites[robot % 3]! }, values: { temperature: Math.floor(random() * 100) } };
      valid.push(e);
      const body = JSON.stringify({ id: e.id, ts: e.ts, tags: e.tags, values: e.values });
      publisher.publish(`telemetry.${source}.status`, body);
      if (random() < 0.1) publisher.publish(`telemetry.${source}.status`, body);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  await Promise.all(pending);
  await publisher.settled();
  assert.ok(c, "the third node joined");
  const salted = await hotKeys.get("fleet", "[]");
  assert.ok(salted && salted.reason === "rate" && salted.from < Date.now(), `the fleet-wide series was salted: ${JSON.stringify(salted)}`);
  // The killed node's units were taken over after its heartbeat expired.
  await eventually(async () => ((await ownedBy([c!.nodeId])) ? true : undefined), 30_000, "the last node owning every unit");

  // The dead node comes back (same data dir, so the same id) and answers for the whole cluster too.
  await a.restart();
  const expected = expectedWindows(rules, valid);
  const range = { from: start - 60_000, to: Date.now() + 60_000 };
  for (const node of [c!, a]) {
    const diffs = await converge(node.url, rules, expected, wanted, range);
    assert.deepEqual(diffs, [], `node ${node.nodeId} differs from the batch computation:\n${diffs.slice(0, 20).join("\n")}\n--- its log ---\n${node.log()}`);
  }
  assert.deepEqual(revisionConflicts(await readStream(nc, streams.results)), []);
  // The fleet's events really went through sub-actors: their hand-overs are in the mailbox.
  const handOvers = (await readStream(nc, streams.mailbox))
    .map((m) => decodeMailbox(m.data))
    .filter((m) => m.type !== "marks" && m.partials.some((p) => p.fromSub && p.metric === "fleet"));
  assert.ok(handOvers.length > 0, "salted sub-actors handed their shares to the fleet's windows");
  // Quiet now: the salting is reversed, visible in the hot-keys bucket (and `tally status`).
  await eventually(async () => ((await hotKeys.get("fleet", "[]"))?.until !== undefined ? true : undefined), 20_000, "the fleet series cooled");
});

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { Membership, type MemberInfo } from "../cluster/membership.js";
import { OwnershipTable } from "../cluster/ownership.js";
import { startTestNats } from "./harness.js";

let nats: Awaited<ReturnType<typeof startTestNats>>;
let nc: NatsConnection;
let otherNc: NatsConnection;
let table: OwnershipTable;
/** The same bucket through a second connection, as another node would see it. */
let otherTable: OwnershipTable;

before(async () => {
  nats = await startTestNats();
  nc = await connect({ servers: nats.url });
  otherNc = await connect({ servers: nats.url });
  table = await OwnershipTable.open(nc);
  otherTable = await OwnershipTable.open(otherNc);
});

after(async () => {
  await nc?.close();
  await otherNc?.close();
  await nats?.cleanup();
});

test("two nodes racing to claim an unowned unit: exactly one wins", async () => {
  const results = await Promise.all([table.claim("shard.1", "node-a", 0), otherTable.claim("shard.1", "node-b", 0)]);
  const winners = results.filter((r) => r !== undefined);
  assert.equal(winners.length, 1, `claims returned ${JSON.stringify(results)}`);
  const winner = results[0] !== undefined ? "node-a" : "node-b";
  const entry = await table.get("shard.1");
  assert.deepEqual({ node: entry?.node, epoch: entry?.epoch, revision: entry?.revision }, { node: winner, epoch: winners[0], revision: winners[0] });
});

test("racing claims expecting the same revision of an owned unit: exactly one wins, and only it", async () => {
  const first = (await table.claim("shard.2", "node-a", 0))!;
  assert.ok(first > 0);
  for (let round = 0; round < 5; round++) {
    const current = (await table.get("shard.2"))!;
    const contenders = ["node-b", "node-c", "node-d"];
    const results = await Promise.all(contenders.map((node, i) => (i % 2 ? otherTable : table).claim("shard.2", node, current.revision)));
    const won = results.flatMap((epoch, i) => (epoch === undefined ? [] : [{ node: contenders[i], epoch }]));
    assert.equal(won.length, 1, `round ${round}: ${JSON.stringify(results)}`);
    const after = (await table.get("shard.2"))!;
    assert.equal(after.node, won[0]!.node);
    assert.equal(after.epoch, won[0]!.epoch);
    assert.ok(after.epoch > current.epoch);
  }
  assert.equal(await table.claim("shard.2", "node-a", first), undefined, "a claim expecting an old revision loses");
  assert.equal(await table.claim("shard.2", "node-a", 0), undefined, "a claim expecting no entry loses once there is one");
});

test("a release by a stale owner, another node or a wrong epoch is refused", async () => {
  const a = (await table.claim("shard.3", "node-a", 0))!;
  const b = (await otherTable.claim("shard.3", "node-b", a))!;
  assert.ok(b > a);
  assert.equal(await table.release("shard.3", "node-a", a), false, "node-a was fenced by node-b");
  assert.equal(await table.release("shard.3", "node-a", b), false, "node-a does not own it at b's epoch either");
  assert.equal(await otherTable.release("shard.3", "node-b", a), false, "node-b's ownership is not at epoch a");
  assert.deepEqual(await table.get("shard.3").then((o) => [o?.node, o?.epoch]), ["node-b", b]);
  assert.equal(await otherTable.release("shard.3", "node-b", b), true);
  const released = (await table.get("shard.3"))!;
  assert.equal(released.node, null);
  assert.ok(released.epoch > b);
  assert.equal(await otherTable.release("shard.3", "node-b", b), false, "released twice");
});

test("epochs strictly increase across claim, release and claim, whatever else is written between", async () => {
  const epochs: number[] = [];
  let revision = (await table.get("partition.9"))?.revision ?? 0;
  for (const node of ["node-a", "node-b", "node-a"]) {
    const epoch = await table.claim("partition.9", node, revision);
    assert.ok(epoch !== undefined, `${node} claims`);
    epochs.push(epoch);
    await otherTable.claim(`partition.noise.${epochs.length}`, "node-z", 0);
    assert.equal(await table.release("partition.9", node, epoch), true);
    revision = (await table.get("partition.9"))!.revision;
    epochs.push(revision);
  }
  for (let i = 1; i < epochs.length; i++) assert.ok(epochs[i]! > epochs[i - 1]!, `epochs ${epochs.join(", ")}`);
});

test("all() lists every unit with its owner and epoch", async () => {
  const epoch = (await table.claim("shard.31", "node-c", 0))!;
  const all = await otherTable.all();
  assert.deepEqual(
    { ...all.get("shard.31"), at: 0 },
    { node: "node-c", epoch, revision: epoch, at: 0 },
  );
  for (const unit of ["shard.1", "shard.2", "shard.3", "partition.9"]) assert.deepEqual(all.get(unit), await table.get(unit), unit);
  assert.equal(all.get("shard.3")?.node, null, "a released unit is listed, unowned");
  assert.equal(await table.get("shard.30"), undefined);
});

test("members() lists live members only: one that left and one whose heartbeat expired are gone", async () => {
  const membership = await Membership.open(nc, 1_500);
  const info = (id: string): MemberInfo => ({ id, startedAt: 0, heartbeatAt: Date.now(), partitions: [], shards: [], watermark: null, lag: { partitions: {}, shards: {}, mailbox: 0 } });
  const stayer = await Membership.open(otherNc, 1_500);
  await stayer.join(async () => info("node-stays"), 200);
  const leaver = await Membership.open(otherNc, 1_500);
  await leaver.join(async () => info("node-leaves"), 200);
  // One put and no more heartbeats: it expires with the bucket's max_age.
  const dies = await Membership.open(otherNc, 1_500);
  await dies.join(async () => info("node-dies"), 3_600_000);
  dies.stopHeartbeat();
  assert.deepEqual((await membership.members()).map((m) => m.id), ["node-dies", "node-leaves", "node-stays"]);
  await leaver.leave("node-leaves");
  assert.deepEqual((await membership.members()).map((m) => m.id), ["node-dies", "node-stays"]);
  for (const deadline = Date.now() + 10_000; (await membership.members()).some((m) => m.id === "node-dies"); ) {
    assert.ok(Date.now() < deadline, "the silent member never expired");
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.deepEqual((await membership.members()).map((m) => m.id), ["node-stays"]);
  await stayer.leave("node-stays");
});

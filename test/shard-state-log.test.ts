import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, test } from "node:test";
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { connect, headers, type NatsConnection } from "@nats-io/transport-node";
import { FencedError, ShardStateLog, type ShardStateWriter } from "../node/shard-state-log.js";
import { ChunkPacker, header } from "../node/shard-state-records.js";
import { streams, subjects } from "../node/streams.js";
import { startTestNats } from "./harness.js";

let nats: Awaited<ReturnType<typeof startTestNats>>;
let nc: NatsConnection;
let js: JetStreamClient;
let jsm: JetStreamManager;
let log: ShardStateLog;

before(async () => {
  nats = await startTestNats();
  nc = await connect({ servers: nats.url });
  js = jetstream(nc);
  jsm = await jetstreamManager(nc);
  await ShardStateLog.ensureStream(jsm, 1);
  log = new ShardStateLog(js, jsm);
});

after(async () => {
  await nc?.close();
  await nats?.cleanup();
});

const text = (s: string) => new TextEncoder().encode(s);

/** What the state should be: the checkpoints applied to a plain map. */
class Model {
  readonly entries = new Map<string, Uint8Array>();
  apply(puts: [string, Uint8Array][], deletes: string[]): this {
    for (const [k, v] of puts) this.entries.set(k, v);
    for (const k of deletes) this.entries.delete(k);
    return this;
  }
}

function assertSameEntries(actual: Map<string, Uint8Array>, expected: Map<string, Uint8Array>, what = "entries") {
  assert.deepEqual([...actual.keys()].sort(), [...expected.keys()].sort(), `${what}: keys`);
  for (const [key, value] of expected) assert.ok(Buffer.from(actual.get(key)!).equals(value), `${what}: value of ${key}`);
}

async function messagesOn(shard: number): Promise<number> {
  const info = await jsm.streams.info(streams.shardState, { subjects_filter: subjects.shardState(shard) });
  return info.state.subjects?.[subjects.shardState(shard)] ?? 0;
}

async function commit(writer: ShardStateWriter, model: Model, puts: [string, Uint8Array][], deletes: string[], meta: string) {
  const result = await writer.commit({ puts, deletes, meta: text(meta) });
  model.apply(puts, deletes);
  return result;
}

test("an empty shard restores to nothing", async () => {
  const restored = await log.restore(100);
  assert.deepEqual(restored, { entries: new Map(), checkpointId: 0, lastSequence: 0 });
  assert.equal(await log.lastCheckpointId(100), 0);
  // A fence alone holds no checkpoint either.
  await log.open(100, 1);
  const fenced = await log.restore(100);
  assert.equal(fenced.entries.size, 0);
  assert.equal(fenced.checkpointId, 0);
  assert.equal(fenced.meta, undefined);
  assert.ok(fenced.lastSequence > 0);
});

test("puts and deletes over several checkpoints restore exactly, with the last checkpoint's meta", async () => {
  const writer = await log.open(1, 3);
  const model = new Model();
  await commit(writer, model, [["a", text("1")], ["b", text("2")], ["c", text("3")], ["ключ/😀", text("unicode")]], [], "m1");
  await commit(writer, model, [["b", text("two")], ["empty", new Uint8Array(0)]], ["a", "never-existed"], "m2");
  await commit(writer, model, [["d", text("4")], ["e", text("5")]], ["d"], "m3");
  const last = await commit(writer, model, [], [], "m4");

  const restored = await log.restore(1);
  assertSameEntries(restored.entries, model.entries);
  assert.equal(restored.entries.get("empty")?.length, 0, "an empty value is a value, not a delete");
  assert.ok(!restored.entries.has("d"), "deletes apply after puts of the same checkpoint");
  assert.equal(Buffer.from(restored.meta!).toString(), "m4");
  assert.equal(restored.checkpointId, last.checkpointId);
  assert.equal(restored.lastSequence, last.checkpointId);
  assert.equal(await log.lastCheckpointId(1), last.checkpointId);
  assert.equal(writer.checkpointId, last.checkpointId);
  assert.equal(await messagesOn(1), 5, "a fence and one message per small checkpoint");
});

test("a checkpoint of several MiB goes out in chunks under the payload limit and restores byte for byte", async () => {
  const writer = await log.open(2, 1);
  const model = new Model();
  await commit(writer, model, [["old-1", text("x")], ["old-2", text("y")]], [], "small");
  const before = await messagesOn(2);
  const puts: [string, Uint8Array][] = Array.from({ length: 400 }, (_, i) => [`actor-${i}`, randomBytes(8 * 1024 + i)]);
  puts.push(["big-actor", randomBytes(700 * 1024)]);
  const { checkpointId } = await commit(writer, model, puts, ["old-1"], "large");
  const written = (await messagesOn(2)) - before;
  assert.ok(written >= 7, `${written} messages for ~3.9 MiB`);

  const restored = await log.restore(2);
  assertSameEntries(restored.entries, model.entries);
  assert.equal(restored.checkpointId, checkpointId);
  assert.equal(Buffer.from(restored.meta!).toString(), "large");

  // An entry no record can hold is refused before anything is written; the writer carries on.
  const count = await messagesOn(2);
  await assert.rejects(writer.commit({ puts: [["a", text("fine")], ["huge", new Uint8Array(1024 * 1024)]], deletes: [], meta: text("x") }), RangeError);
  assert.equal(await messagesOn(2), count);
  await commit(writer, model, [["after", text("ok")]], [], "after");
  assertSameEntries((await log.restore(2)).entries, model.entries);
});

test("chunks a crashed owner left without a commit are ignored, before and after the next owner's checkpoints", async () => {
  const shard = 3;
  const first = await log.open(shard, 10);
  const model = new Model();
  const committed = await commit(first, model, [["k1", text("v1")], ["k2", text("v2")]], [], "m1");

  // The owner dies mid-checkpoint: two chunks of a checkpoint are on the log, its commit never is.
  let lastSeq = committed.checkpointId;
  for (const key of ["k1", "k3"]) {
    const packer = new ChunkPacker();
    packer.add(key, text("uncommitted"));
    const h = headers();
    h.set(header.kind, "chunk");
    h.set(header.epoch, "10");
    h.set(header.checkpoint, String(committed.checkpointId));
    lastSeq = (await js.publish(subjects.shardState(shard), packer.take(), { headers: h, expect: { lastSubjectSequence: lastSeq } })).seq;
  }
  const orphaned = await log.restore(shard);
  assertSameEntries(orphaned.entries, model.entries, "with orphan chunks at the tail");
  assert.equal(orphaned.checkpointId, committed.checkpointId);
  assert.equal(orphaned.lastSequence, lastSeq);
  assert.equal(await log.lastCheckpointId(shard), committed.checkpointId, "read from the orphan chunk's header");

  const next = await log.open(shard, 11);
  assert.equal(await log.lastCheckpointId(shard), committed.checkpointId, "read from the fence's header");
  assert.equal(next.checkpointId, committed.checkpointId);
  const second = await commit(next, model, [["k4", text("v4")]], [], "m2");
  const restored = await log.restore(shard);
  assertSameEntries(restored.entries, model.entries, "after the next owner's commit");
  assert.equal(restored.checkpointId, second.checkpointId);
});

test("a snapshot abandoned half-written is ignored, and its writer's later checkpoints still apply", async () => {
  const shard = 4;
  const writer = await log.open(shard, 1);
  const model = new Model();
  await commit(writer, model, [["keep", text("kept")]], [], "m1");
  const before = await messagesOn(shard);
  function* badSnapshot(): Generator<[string, Uint8Array]> {
    for (let i = 0; i < 3; i++) yield [`snap-${i}`, randomBytes(400 * 1024)];
    yield ["too-big", new Uint8Array(2 * 1024 * 1024)];
  }
  await assert.rejects(writer.compact(badSnapshot(), text("snap")), RangeError);
  assert.ok((await messagesOn(shard)) > before, "snapshot chunks were written");
  const next = await commit(writer, model, [["later", text("applies")]], [], "m2");

  const restored = await log.restore(shard);
  assertSameEntries(restored.entries, model.entries);
  assert.equal(restored.checkpointId, next.checkpointId);
  assert.equal(Buffer.from(restored.meta!).toString(), "m2");
});

test("a newer owner's fence makes the old writer's commits fail with FencedError; restore shows only committed data", async () => {
  const shard = 5;
  const old = await log.open(shard, 5);
  const model = new Model();
  await commit(old, model, [["a", text("old-1")]], [], "old-1");

  const current = await log.open(shard, 7);
  await assert.rejects(old.commit({ puts: [["a", text("stale")], ["stale", text("x")]], deletes: [], meta: text("stale") }), (e: unknown) => {
    assert.ok(e instanceof FencedError, String(e));
    assert.equal(e.epoch, 5);
    assert.equal(e.logEpoch, 7);
    return true;
  });
  const bigStale: [string, Uint8Array][] = Array.from({ length: 4 }, (_, i) => [`stale-${i}`, randomBytes(300 * 1024)]);
  await assert.rejects(old.commit({ puts: bigStale, deletes: [], meta: text("stale") }), FencedError);
  await assert.rejects(old.compact([["stale", text("snapshot")]], text("stale")), FencedError);
  await assert.rejects(log.open(shard, 6), FencedError, "an epoch below the log's cannot open");

  const last = await commit(current, model, [["b", text("new")]], ["a"], "new-1");
  const restored = await log.restore(shard);
  assertSameEntries(restored.entries, model.entries);
  assert.equal(restored.checkpointId, last.checkpointId);
  await assert.rejects(old.commit({ puts: [], deletes: [], meta: text("stale") }), FencedError, "still fenced after the new owner wrote");
});

test("a record of the writer's own epoch it never saw acked (a lost ack) fails the writer, but is no fence", async () => {
  const shard = 13;
  const writer = await log.open(shard, 9);
  await commit(writer, new Model(), [["a", text("1")]], [], "m1");
  // What a publish whose ack timed out leaves behind: a record of epoch 9 the writer did not see.
  const h = headers();
  h.set(header.kind, "chunk");
  h.set(header.epoch, "9");
  h.set(header.checkpoint, "0");
  h.set(header.sinceSnapshot, "0");
  await js.publish(subjects.shardState(shard), text("lost ack"), { headers: h });
  await assert.rejects(writer.commit({ puts: [], deletes: [], meta: text("m2") }), (e: unknown) => {
    assert.ok(!(e instanceof FencedError), "its own record is not a newer owner's fence");
    assert.match(String(e), /never saw acked/);
    return true;
  });
  const reopened = await log.open(shard, 9);
  await reopened.commit({ puts: [["b", text("2")]], deletes: [], meta: text("m3") });
  assert.equal(Buffer.from((await log.restore(shard)).meta!).toString(), "m3");
});

test("of two owners opening at once, the higher epoch ends up the writer", async () => {
  const shard = 6;
  await log.open(shard, 1);
  for (let round = 0; round < 5; round++) {
    const low = 10 + round * 2;
    const [lower, higher] = await Promise.allSettled([log.open(shard, low), log.open(shard, low + 1)]);
    assert.equal(higher.status, "fulfilled", `round ${round}: ${higher.status === "rejected" ? higher.reason : ""}`);
    await (higher as PromiseFulfilledResult<ShardStateWriter>).value.commit({ puts: [[`r${round}`, text("x")]], deletes: [], meta: text("") });
    if (lower.status === "fulfilled") {
      await assert.rejects(lower.value.commit({ puts: [], deletes: [], meta: text("") }), FencedError);
    } else {
      assert.ok(lower.reason instanceof FencedError, String(lower.reason));
    }
  }
  assert.equal((await log.restore(shard)).entries.size, 5);
});

test("compaction writes a snapshot, purges what it supersedes, and restores the same state", async () => {
  const shard = 7;
  const writer = await log.open(shard, 2);
  const model = new Model();
  const keys = Array.from({ length: 40 }, (_, i) => `window-${i}`);
  for (let round = 0; round < 15; round++) {
    const puts: [string, Uint8Array][] = keys.filter((_, i) => i % 15 === round || round === 0).map((k) => [k, randomBytes(20 * 1024)]);
    await commit(writer, model, puts, round === 7 ? ["window-3"] : [], `round-${round}`);
  }
  const sinceSnapshot = writer.bytesSinceSnapshot;
  assert.ok(sinceSnapshot > 40 * 20 * 1024, `${sinceSnapshot} bytes since the (absent) snapshot`);
  assert.equal(await log.bytesSinceSnapshot(shard), sinceSnapshot, "the tail carries the count");
  const beforeCount = await messagesOn(shard);
  const beforeState = await log.restore(shard);
  assertSameEntries(beforeState.entries, model.entries, "before compaction");

  async function* snapshot(): AsyncGenerator<[string, Uint8Array]> {
    for (const entry of beforeState.entries) yield entry;
  }
  const { checkpointId, purged } = await writer.compact(snapshot(), text("snapshot"));
  const afterCount = await messagesOn(shard);
  assert.equal(purged, beforeCount, "every record before the snapshot");
  assert.ok(afterCount >= 2 && afterCount <= 3, `${afterCount} messages left for a ~780 KiB snapshot`);
  assert.equal(writer.bytesSinceSnapshot, 0);
  assert.equal(await log.bytesSinceSnapshot(shard), 0);

  const afterState = await log.restore(shard);
  assertSameEntries(afterState.entries, beforeState.entries, "after compaction");
  assert.equal(afterState.checkpointId, checkpointId);
  assert.equal(Buffer.from(afterState.meta!).toString(), "snapshot");
  assert.equal(await log.lastCheckpointId(shard), checkpointId);

  // Checkpoints after the snapshot apply on top of it, also for the next owner.
  await commit(writer, model, [["window-0", text("after")]], ["window-1"], "after");
  const next = await log.open(shard, 3);
  assert.ok(next.bytesSinceSnapshot > 0 && next.bytesSinceSnapshot === (await log.bytesSinceSnapshot(shard)));
  const restored = await log.restore(shard);
  assertSameEntries(restored.entries, model.entries, "after a later checkpoint");
  assert.equal(Buffer.from(restored.meta!).toString(), "after");
});

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { AckedPublisher, PublishRefused } from "../node/acked-publisher.js";
import { decodeRecord, encodeRecord, type BatchRecord } from "../node/router-log.js";
import { idFingerprint } from "../actors/id-fingerprint.js";
import { startTestNats } from "./harness.js";

let nats: Awaited<ReturnType<typeof startTestNats>>;
let nc: NatsConnection;
let jsm: JetStreamManager;

before(async () => {
  nats = await startTestNats();
  nc = await connect({ servers: nats.url });
  jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: "PUB", subjects: ["pub.>"], duplicate_window: 60_000_000_000 });
});

after(async () => {
  await nc?.close();
  await nats?.cleanup();
});

test("acked publishes: many in flight each get their own sequence; a repeated msgID is a duplicate, not a new message", async () => {
  const publisher = new AckedPublisher(nc);
  const acks = await Promise.all(Array.from({ length: 500 }, (_, i) => publisher.publish(`pub.a.${i % 7}`, `m${i}`, { msgID: `id-${i}` })));
  assert.deepEqual(
    acks.map((a) => a.seq).sort((x, y) => x - y),
    Array.from({ length: 500 }, (_, i) => i + 1),
  );
  assert.ok(acks.every((a) => a.stream === "PUB" && !a.duplicate));
  const again = await publisher.publish("pub.a.3", "m3", { msgID: "id-3" });
  assert.equal(again.duplicate, true);
  assert.equal((await jsm.streams.info("PUB")).state.messages, 500);
  publisher.close();
});

test("acked publishes: a wrong expected last sequence is refused with JetStream's code; no stream is an error too", async () => {
  const publisher = new AckedPublisher(nc);
  const first = await publisher.publish("pub.log", "one", { expectLastSubjectSequence: 0 });
  const second = await publisher.publish("pub.log", "two", { expectLastSubjectSequence: first.seq });
  assert.equal(second.seq, first.seq + 1);
  await assert.rejects(publisher.publish("pub.log", "stale", { expectLastSubjectSequence: first.seq }), (e: unknown) => {
    assert.ok(e instanceof PublishRefused);
    assert.equal(e.errCode, 10071);
    return true;
  });
  await assert.rejects(publisher.publish("nostream.x", "lost"), /no stream takes it/);
  publisher.close();
});

test("acked publishes: an ack that never comes fails the publish after the timeout; close fails what still waits", async () => {
  // A subject nobody answers on with a reply: a core subscriber swallows it.
  const silent = nc.subscribe("quiet.>", { callback: () => undefined });
  const publisher = new AckedPublisher(nc, 300);
  await assert.rejects(publisher.publish("quiet.one", "x"), /no ack within 300 ms/);
  const pending = publisher.publish("quiet.two", "y");
  publisher.close();
  await assert.rejects(pending, /closed before its ack/);
  silent.unsubscribe();
});

test("router log records: fingerprints survive the binary format; records of earlier versions (JSON with ids) still read", () => {
  const ids = ["a", "robot-7:42", "ünïcødé", ""];
  const fingerprints = new Uint32Array(3 * ids.length);
  ids.forEach((id, i) => fingerprints.set(idFingerprint(id), 3 * i));
  const record: BatchRecord = { partition: 3, first: 10, last: 20, prevMaxTs: null, maxTs: 1234, fingerprints, at: 99 };
  assert.deepEqual(decodeRecord(encodeRecord(record)), record);
  const legacy = Buffer.from(JSON.stringify({ partition: 3, first: 10, last: 20, prevMaxTs: null, maxTs: 1234, ids, at: 99 }));
  assert.deepEqual(decodeRecord(legacy), record);
});

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import type { WindowResult } from "../actors/window-result.js";
import { resultsOf } from "../node/provisional-batcher.js";
import { streams } from "../node/streams.js";
import { readStream, revisionConflicts } from "./exactness.js";
import { eventually, startTestNats, startTestNode } from "./harness.js";

const rules = [{ name: "devices", kind: "status", groupBy: ["device"], aggregates: ["count"], window: "10s", lateness: "0s" }];
const devices = 600;

let nats: Awaited<ReturnType<typeof startTestNats>>;
let node: Awaited<ReturnType<typeof startTestNode>>;
let nc: NatsConnection;

before(async () => {
  nats = await startTestNats();
  node = await startTestNode(nats.url, rules);
  nc = await connect({ servers: nats.url });
});

after(async () => {
  await nc?.close();
  await node?.cleanup();
  await nats?.cleanup();
});

const device = (i: number) => `d${String(i).padStart(4, "0")}`;

test("many windows' provisional results share messages, and so do their finals, exact, never followed by a stale provisional", async () => {
  // Event time well ahead of the clock (within the 5 minutes allowed), so the windows stay open until we move the watermark.
  const start = Math.floor((Date.now() + 3 * 60_000) / 10_000) * 10_000;
  const query = async () => {
    const points = await node.node.query({ metric: "devices", window: "10s", from: start, to: start + 10_000, where: {} });
    return points;
  };
  const published: { subject: string; body: string }[] = [];
  const sub = nc.subscribe("results.devices.>", {
    callback: (_e, m) => {
      published.push({ subject: m.subject, body: m.string() });
    },
  });
  await nc.flush();

  const events = Array.from({ length: devices }, (_, i) => ({
    source: `s${i % 40}`,
    kind: "status",
    body: { id: `e${i}`, ts: start + 1_000 + (i % 5_000), tags: { device: device(i) }, values: {} },
  }));
  await node.node.publishEvents(events);
  // Every window's provisional result reached the results store (through the results stream).
  await eventually(async () => ((await query()).filter((p) => p.status === "provisional").length === devices ? true : undefined), 20_000, "provisional results");

  // One event 30 s later moves the watermark past every window: all go final.
  await node.node.publishEvents([{ source: "s0", kind: "status", body: { id: "tick", ts: start + 30_000, tags: { device: "tick" }, values: {} } }]);
  const finals = await eventually(async () => {
    const points = await query();
    return points.length === devices && points.every((p) => p.status === "final") ? points : undefined;
  }, 20_000, "final results");
  sub.unsubscribe();

  // Exact: one event per device, each window final at revision 1 with count 1.
  assert.deepEqual(
    finals.map((p) => [p.dims.device, p.revision, p.eventCount, p.values.count]).sort(),
    Array.from({ length: devices }, (_, i) => [device(i), 1, 1, 1]).sort(),
  );

  // Batched: provisional results travel many per message (a JSON array), and so do finals, each
  // batch of one kind only (README, "Results").
  assert.ok(published.every((m) => m.body.startsWith("[")), "every results message is a batch");
  const batches = published.map((m) => resultsOf(m.body));
  const provisionalMessages = batches.filter((b) => b[0]!.status === "provisional");
  const finalMessages = batches.filter((b) => b[0]!.status !== "provisional");
  for (const b of batches) assert.ok(b.every((r) => (r.status === "provisional") === (b[0]!.status === "provisional")), "a batch holds one kind");
  const provisional = provisionalMessages.flat();
  assert.ok(provisional.length >= devices, `every window had a provisional result (${provisional.length})`);
  assert.ok(
    provisionalMessages.length * 5 <= provisional.length,
    `${provisional.length} provisional results in ${provisionalMessages.length} messages: not batched`,
  );
  const finalResults = finalMessages.flat().filter((r) => r.start === start);
  assert.equal(finalResults.length, devices, "one final per window");
  assert.equal(new Set(finalResults.map((r) => r.key)).size, devices);
  assert.ok(finalMessages.length * 5 <= finalResults.length, `${finalResults.length} finals in ${finalMessages.length} messages: not batched`);

  // In the stream's order, no window's provisional result comes after its final one.
  const stream = await readStream(nc, streams.results);
  const finalSeen = new Set<string>();
  for (const result of stream.flatMap((m) => resultsOf(m.body))) {
    if (result.status === "provisional") assert.ok(!finalSeen.has(result.key), `a provisional result of ${result.key} after its final`);
    else finalSeen.add(result.key);
  }
  assert.deepEqual(revisionConflicts(stream), []);
});

test("a batch of finals published again (a replay after a recovery, batched otherwise) changes no answer and tells no subscriber twice", async () => {
  const start = Math.floor((Date.now() - 30 * 60_000) / 10_000) * 10_000;
  // No shard or epoch: not fenced (the node's own shards' epochs are whatever placement gave them).
  const final = (d: string, count: number): WindowResult => ({
    key: `devices|10s|${start}|${d}`,
    metric: "devices",
    window: "10s",
    start,
    end: start + 10_000,
    dims: { device: d },
    status: "final",
    revision: 1,
    eventCount: count,
    lateCount: 0,
    watermark: start + 10_000,
    values: { count },
  });
  const heard: WindowResult[] = [];
  const stop = node.node.onResult((r) => r.start === start && heard.push(r));
  const q = { metric: "devices", window: "10s", from: start, to: start + 10_000, where: {} };
  try {
    const first = [final("x1", 3), final("x2", 4), final("x3", 5)];
    nc.publish("results.devices.10s", JSON.stringify(first));
    const stored = await eventually(async () => ((r) => (r.length === 3 ? r : undefined))(await node.node.storedResults(q)), 10_000, "the batch stored");
    assert.deepEqual(stored.map((r) => [r.dims.device, r.values.count]), [["x1", 3], ["x2", 4], ["x3", 5]]);
    await eventually(async () => (heard.length === 3 ? true : undefined), 10_000, "subscribers told");

    // Again, in another order, split otherwise, one even with other content: the first stays.
    nc.publish("results.devices.10s", JSON.stringify([final("x3", 5)]));
    nc.publish("results.devices.10s", JSON.stringify([final("x2", 40), final("x1", 3)]));
    // A marker after them: once it is stored, the duplicates before it were handled.
    nc.publish("results.devices.10s", JSON.stringify([final("x4", 1)]));
    await eventually(async () => ((await node.node.storedResults(q)).length === 4 ? true : undefined), 10_000, "the marker stored");
    assert.deepEqual((await node.node.storedResults(q)).map((r) => [r.dims.device, r.values.count]), [["x1", 3], ["x2", 4], ["x3", 5], ["x4", 1]]);
    assert.deepEqual((await node.node.query(q)).map((r) => [r.dims.device, r.values.count]), [["x1", 3], ["x2", 4], ["x3", 5], ["x4", 1]]);
    await eventually(async () => (heard.length >= 4 ? true : undefined), 10_000, "the marker told");
    assert.deepEqual(heard.map((r) => r.dims.device), ["x1", "x2", "x3", "x4"], "nobody told twice");
  } finally {
    stop();
  }
});

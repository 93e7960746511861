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

test("many windows' provisional results share messages; finals stay one exact message each, never followed by a stale provisional", async () => {
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

  // Batched: provisional results travel many per message (a JSON array); finals one per message.
  const provisionalMessages = published.filter((m) => m.body.startsWith("["));
  const provisional = provisionalMessages.flatMap((m) => resultsOf(m.body));
  assert.ok(provisional.length >= devices, `every window had a provisional result (${provisional.length})`);
  assert.ok(provisional.every((r) => r.status === "provisional"), "a batch holds provisional results only");
  assert.ok(
    provisionalMessages.length * 5 <= provisional.length,
    `${provisional.length} provisional results in ${provisionalMessages.length} messages: not batched`,
  );
  const single = published.filter((m) => !m.body.startsWith("[")).map((m) => JSON.parse(m.body) as WindowResult);
  assert.equal(single.filter((r) => r.status === "final" && r.start === start).length, devices);
  assert.ok(single.every((r) => r.status !== "provisional"));

  // In the stream's order, no window's provisional result comes after its final one.
  const stream = await readStream(nc, streams.results);
  const finalSeen = new Set<string>();
  for (const result of stream.flatMap((m) => resultsOf(m.body))) {
    if (result.status === "provisional") assert.ok(!finalSeen.has(result.key), `a provisional result of ${result.key} after its final`);
    else finalSeen.add(result.key);
  }
  assert.deepEqual(revisionConflicts(stream), []);
});

import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import type { WindowResult } from "../actors/window-result.js";
import { runNode } from "../cli/run-node.js";
import { LiveResults, liveResultsDefaults } from "../node/live-results.js";
import { warmLiveResults } from "../node/live-warmup.js";
import { streams } from "../node/streams.js";
import { eventually, fastSettings, startTestNats, tempDir } from "./harness.js";
import { NodeProcess } from "./processes.js";
import { windowResult } from "./window-results.js";

// Event time is now; a lateness of 10 minutes keeps the minute open for the whole test. (The
// tests share a NATS server, so each takes its own kind of event.)
const rule = { name: "devices", kind: "status", groupBy: ["device"], aggregates: ["count"], window: "1m", lateness: "10m" };

let nats: Awaited<ReturnType<typeof startTestNats>>;
let nc: NatsConnection;
let jsm: JetStreamManager;
const dirs: ReturnType<typeof tempDir>[] = [];

before(async () => {
  nats = await startTestNats();
  nc = await connect({ servers: nats.url });
  jsm = await jetstreamManager(nc);
});

after(async () => {
  await nc?.close();
  await nats?.cleanup();
  for (const dir of dirs) dir.remove();
});

type Point = { start: number; dims: Record<string, string>; status: string; revision: number; eventCount: number; values: Record<string, number> };

const event = (id: string, ts: number, device: string) => ({ id, ts, tags: { device }, values: {} });

async function points(url: string, metric: string, from: number): Promise<Point[]> {
  const res = await fetch(`${url}/v1/metrics/${metric}?window=1m&from=${from}&to=${from + 60_000}`);
  return ((await res.json()) as { points: Point[] }).points;
}

/** Now, at least 5 s before the minute ends (events of the test stay in one minute of event and arrival time). */
async function earlyInAMinute(): Promise<number> {
  const left = 60_000 - (Date.now() % 60_000);
  if (left < 5_000) await new Promise((r) => setTimeout(r, left + 10));
  return Date.now();
}

const summary = (ps: Point[]) => ps.map((p) => [p.dims.device, p.status, p.values.count]);

/** Until the node's results consumer has stored its position past everything in the results stream. */
async function resultsConsumerCaughtUp(nodeId: string): Promise<void> {
  const last = (await jsm.streams.info(streams.results)).state.last_seq;
  await eventually(async () => ((await jsm.consumers.info(streams.results, `results-${nodeId}`)).ack_floor.stream_seq >= last ? true : undefined), 15_000, "the results consumer past the provisional results");
}

test("an open window's provisional result is in queries right after a graceful restart, with no new event", async () => {
  const dir = tempDir("tally-warmup-");
  dirs.push(dir);
  const start = () => runNode({ natsUrl: nats.url, dataDir: dir.path, rules: [rule], ...fastSettings }, 0);
  let running = await start();
  const now = await earlyInAMinute();
  const minute = now - (now % 60_000);
  const send = (events: ReturnType<typeof event>[]) =>
    running.node.publishEvents(events.map((body) => ({ source: `s-${body.tags.device}`, kind: "status", body })));
  await send([event("a1", now, "a"), event("a2", now, "a"), event("a3", now, "a"), event("b1", now, "b"), event("b2", now, "b")]);
  const url = () => `http://127.0.0.1:${running.http.port}`;
  const open = [
    ["a", "provisional", 3],
    ["b", "provisional", 2],
  ];
  const accepted = async () => (await points(url(), "_audit", minute)).filter((p) => p.dims.counter === "accepted").map((p) => [p.status, p.values.count]);
  await eventually(async () => (JSON.stringify(summary(await points(url(), "devices", minute))) === JSON.stringify(open) ? true : undefined), 15_000, "the open windows' provisional results");
  await eventually(async () => (JSON.stringify(await accepted()) === JSON.stringify([["provisional", 5]]) ? true : undefined), 15_000, "the audit's open minute");
  await resultsConsumerCaughtUp(running.node.id);

  await running.stop();
  running = await start();
  try {
    // Nothing was sent since: what the query shows came from the results stream at start.
    assert.deepEqual(summary(await points(url(), "devices", minute)), open);
    assert.deepEqual(await running.node.storedResults({ metric: "devices", window: "1m", from: minute, to: minute + 60_000, where: {} }), [], "never in RocksDB");
    // The audit's open minute too (a built-in metric, same path).
    assert.deepEqual(await accepted(), [["provisional", 5]]);

    // It goes on as before: the next change replaces it, live.
    await send([event("a4", now, "a")]);
    await eventually(async () => ((await points(url(), "devices", minute)).find((p) => p.dims.device === "a")?.values.count === 4 ? true : undefined), 15_000, "a's next change");
  } finally {
    await running.stop();
  }
});

test("an open window's provisional result is in queries right after a kill -9 and restart, with no new event", async () => {
  const dir = tempDir("tally-warmup-kill-");
  dirs.push(dir);
  const rulesFile = join(dir.path, "rules.json");
  writeFileSync(rulesFile, JSON.stringify({ metrics: [{ ...rule, name: "robots", kind: "arm" }] }));
  const node = await NodeProcess.start({
    natsUrl: nats.url,
    dataDir: join(dir.path, "node"),
    rulesFile,
    extraArgs: ["--out-of-orderness", "1s", "--idle-timeout", "500ms", "--checkpoint-interval", "200ms"],
  });
  try {
    const now = await earlyInAMinute();
    const minute = now - (now % 60_000);
    for (const [id, device] of [["k1", "x"], ["k2", "x"], ["k3", "y"]]) nc.publish(`telemetry.s-${device}.arm`, JSON.stringify(event(id!, now, device!)));
    await nc.flush();
    const open = [
      ["x", "provisional", 2],
      ["y", "provisional", 1],
    ];
    await eventually(async () => (JSON.stringify(summary(await points(node.url, "robots", minute))) === JSON.stringify(open) ? true : undefined), 15_000, "the open windows' provisional results");
    await resultsConsumerCaughtUp(node.nodeId!);
    // Its shards' checkpoints are past the events too, so a restart replays none of them.
    await new Promise((r) => setTimeout(r, 1_000));

    await node.kill9();
    await node.restart();
    assert.deepEqual(summary(await points(node.url, "robots", minute)), open, node.log());
  } finally {
    await node.stop();
  }
});

const result = (over: Partial<WindowResult>): WindowResult => windowResult({ key: "k", window: "1m", end: 60_000, shard: 1, epoch: 5, ...over });

test("the warm-up reads only its span, never regresses what the view holds, and lets a final or a newer epoch win", async () => {
  const js = jetstream(nc);
  const subject = "results.devices.1m";
  const w = (key: string, eventCount: number, over: Partial<WindowResult> = {}) => result({ key, dims: { device: key }, eventCount, values: { count: eventCount }, ...over });
  const publish = async (body: WindowResult | WindowResult[]) => (await js.publish(subject, JSON.stringify(body))).seq;

  await publish([w("before-span", 1)]);
  await new Promise((r) => setTimeout(r, 50));
  const sinceMs = Date.now();
  await new Promise((r) => setTimeout(r, 50));
  await publish([w("a", 3), w("b", 1), w("c", 1, { shard: 3, epoch: 8 }), w("d", 2), w("e", 4), w("tie", 2, { watermark: 1 })]);
  await publish([w("b", 2), w("d", 1)]); // d: an older result again (a shard replaying)
  await publish({ ...w("e", 4), status: "final", revision: 1 });
  const untilSeq = await publish([w("g", 1)]);
  await publish([w("after", 1)]); // the live subscription's

  const live = new LiveResults({ ...liveResultsDefaults, closesAt: (r) => r.end });
  live.noteEpoch(3, 9); // c's shard has a newer owner
  live.offer(w("a", 7)); // heard live meanwhile: newer
  live.offer(w("tie", 2, { watermark: 2 }));
  const report = await warmLiveResults(js, jsm, live, { sinceMs, untilSeq, maxBytes: 2 ** 20, timeoutMs: 10_000 });

  const held = live.query({ metric: "devices", window: "1m", from: 0, to: 60_000, where: {} });
  assert.deepEqual(
    held.map((r) => [r.key, r.eventCount, r.watermark]).sort(),
    [
      ["a", 7, 0],
      ["b", 2, 0],
      ["d", 2, 0],
      ["g", 1, 0],
      ["tie", 2, 2],
    ],
  );
  assert.equal(report.messages, 4);
  assert.equal(report.truncated, false);

  // A byte budget keeps the newest part of the span.
  const cut = new LiveResults({ ...liveResultsDefaults, closesAt: (r) => r.end });
  const small = await warmLiveResults(js, jsm, cut, { sinceMs, untilSeq, maxBytes: 1, timeoutMs: 10_000 });
  assert.equal(small.truncated, true);
  assert.equal(small.fromSeq, untilSeq);
  assert.deepEqual(cut.query({ metric: "devices", window: "1m", from: 0, to: 60_000, where: {} }).map((r) => r.key), ["g"]);
});

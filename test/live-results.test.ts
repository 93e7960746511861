import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import WebSocket from "ws";
import { runNode, type RunningNode } from "../cli/run-node.js";
import { LiveResults, liveResultsDefaults } from "../node/live-results.js";
import { ResultsStore } from "../node/results-store.js";
import { epochsIn } from "../node/tally-node.js";
import { MemoryStateStore } from "../runtime/state-store.js";
import { eventually, fastSettings, startTestNats, tempDir } from "./harness.js";
import { windowResult } from "./window-results.js";

const rules = [{ name: "devices", kind: "status", groupBy: ["device"], aggregates: ["count"], window: "10s", lateness: "0s" }];

let nats: Awaited<ReturnType<typeof startTestNats>>;
const dir = tempDir("tally-live-");
let running: RunningNode | undefined;
const start = () => runNode({ natsUrl: nats.url, dataDir: dir.path, rules, ...fastSettings }, 0);

before(async () => {
  nats = await startTestNats();
  running = await start();
});

after(async () => {
  await running?.stop();
  await nats?.cleanup();
  dir.remove();
});

type Point = { start: number; dims: Record<string, string>; status: string; revision: number; eventCount: number; values: Record<string, number> };
type Message = { type: string; point?: Point };

/** A WebSocket subscription whose messages can be awaited (no sleeps). */
async function subscribe(port: number, query: string) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/subscribe?${query}`);
  const received: Message[] = [];
  const waiters: { match: (m: Message) => boolean; resolve: (m: Message) => void }[] = [];
  ws.on("message", (data) => {
    const m = JSON.parse(String(data)) as Message;
    received.push(m);
    for (const w of waiters.splice(0)) (w.match(m) ? w.resolve(m) : waiters.push(w));
  });
  const next = (match: (m: Message) => boolean) =>
    new Promise<Message>((resolve) => {
      const found = received.find(match);
      if (found) resolve(found);
      else waiters.push({ match, resolve });
    });
  await next((m) => m.type === "subscribed");
  return { ws, received, next };
}

const event = (id: string, ts: number, device: string) => ({ source: `s-${device}`, kind: "status", body: { id, ts, tags: { device }, values: {} } });

test("provisional results reach WebSocket subscribers and queries from memory, never RocksDB; finals replace them, stored, and outlive a restart", async () => {
  const node = running!;
  // Event time ahead of the clock (within the 5 minutes allowed): the windows stay open until the tick below.
  const t = Math.floor((Date.now() + 3 * 60_000) / 10_000) * 10_000;
  const q = { metric: "devices", window: "10s", from: t, to: t + 10_000, where: {} };
  const httpQuery = async (port: number) =>
    ((await (await fetch(`http://127.0.0.1:${port}/v1/metrics/devices?window=10s&from=${t}&to=${t + 10_000}`)).json()) as { points: Point[] }).points;
  const sub = await subscribe(node.http.port, "metric=devices&where=device:a");
  const all = await subscribe(node.http.port, "metric=devices");

  await node.node.publishEvents([event("a1", t + 1_000, "a"), event("a2", t + 2_000, "a"), event("a3", t + 3_000, "a"), event("b1", t + 1_500, "b"), event("b2", t + 2_500, "b")]);
  const provisional = await sub.next((m) => m.point?.status === "provisional" && m.point.eventCount === 3);
  assert.deepEqual(provisional.point!.values, { count: 3 });
  // It came straight from the results subject: RocksDB holds nothing for the window.
  assert.deepEqual(await node.node.storedResults(q), []);

  // A query of the open windows shows their current value (from memory).
  await all.next((m) => m.point?.dims.device === "b" && m.point.eventCount === 2);
  const open = await httpQuery(node.http.port);
  assert.deepEqual(
    open.map((p) => [p.dims.device, p.status, p.revision, p.values.count]),
    [
      ["a", "provisional", 0, 3],
      ["b", "provisional", 0, 2],
    ],
  );
  assert.deepEqual(await node.node.storedResults(q), [], "still nothing provisional in RocksDB");

  // An event 30 s later moves the watermark past both windows: their finals replace the provisional values.
  await node.node.publishEvents([event("tick", t + 30_000, "tick")]);
  await sub.next((m) => m.point?.status === "final");
  await all.next((m) => m.point?.dims.device === "b" && m.point.status === "final");
  const finals = await httpQuery(node.http.port);
  assert.deepEqual(
    finals.map((p) => [p.dims.device, p.status, p.revision, p.values.count]),
    [
      ["a", "final", 1, 3],
      ["b", "final", 1, 2],
    ],
  );
  const stored = await node.node.storedResults(q);
  assert.deepEqual(
    stored.map((r) => [r.dims.device, r.status]),
    [
      ["a", "final"],
      ["b", "final"],
    ],
  );
  // Per window, nothing provisional after the final on the WebSocket.
  const finalAt = sub.received.findIndex((m) => m.point?.status === "final");
  assert.ok(sub.received.slice(finalAt + 1).every((m) => m.point?.status !== "provisional"));
  // The node's RocksDB never held a provisional result: the tick's window is open and not in it.
  const tick = { ...q, from: t + 30_000, to: t + 40_000 };
  // (It is a row of its shard's table: queries read it there, the live view keeps no copy.)
  const tickOpen = await eventually(async () => ((await node.node.query(tick))[0]?.status === "provisional" ? true : undefined), 10_000, "the tick's window in queries");
  assert.ok(tickOpen);
  assert.deepEqual(await node.node.storedResults(tick), []);
  sub.ws.close();
  all.ws.close();

  // A restart keeps the finals (RocksDB) and reads the open window's provisional result back from
  // the results stream (node/live-warmup.ts); its next one replaces it as before.
  await node.stop();
  running = await start();
  assert.deepEqual(
    (await httpQuery(running.http.port)).map((p) => [p.dims.device, p.status, p.values.count]),
    [
      ["a", "final", 3],
      ["b", "final", 2],
    ],
  );
  assert.deepEqual((await running.node.query(tick)).map((p) => [p.dims.device, p.status, p.eventCount]), [["tick", "provisional", 1]]);
  const again = await subscribe(running.http.port, "metric=devices&where=device:tick");
  await running.node.publishEvents([event("tick2", t + 31_000, "tick")]);
  const tickPoint = await again.next((m) => m.point?.status === "provisional" && m.point.eventCount === 2);
  assert.equal(tickPoint.point!.start, t + 30_000);
  again.ws.close();
});

const result = windowResult;

test("the live view keeps the newest provisional result per window, fences stale epochs and stale replays, and stays bounded", () => {
  const live = new LiveResults({ ...liveResultsDefaults, closesAt: (r) => r.end, maxWindows: 3, staleAfterMs: 60_000, finalMemoryMs: 1_000 }, 0);
  const q = { metric: "devices", window: "10s", from: 0, to: 100_000, where: {} };
  assert.equal(live.offer(result({ eventCount: 2 })), true);
  assert.equal(live.offer(result({ eventCount: 1 })), false, "an older provisional result (fewer events) never replaces a newer one");
  assert.equal(live.offer(result({ eventCount: 3, epoch: 20 })), true);
  assert.equal(live.offer(result({ eventCount: 9, epoch: 10 })), false, "a stale owner's result is refused");
  assert.deepEqual(live.query(q).map((r) => r.eventCount), [3]);

  // The final is stored: the entry goes, and a replayed provisional result of it is refused for a while.
  live.settle(result({ status: "final", revision: 1, eventCount: 3, epoch: 20 }), 10);
  assert.equal(live.size, 0);
  assert.equal(live.offer(result({ eventCount: 2, epoch: 20 })), false);
  live.sweep(1_500); // one rotation: still remembered
  assert.equal(live.offer(result({ eventCount: 2, epoch: 20 })), false);
  live.sweep(2_600); // two: forgotten
  assert.equal(live.rememberedFinals, 0);

  // Bounded: past maxWindows the first seen goes.
  for (const d of ["b", "c", "d", "e"]) live.offer(result({ key: `k-${d}`, dims: { device: d }, epoch: 20 }));
  assert.deepEqual(live.query(q).map((r) => r.dims.device), ["c", "d", "e"]);
  // Merged with stored finals: the newer wins, ordered by start then dims.
  const merged = live.merge([result({ key: "k-c", dims: { device: "c" }, status: "final", revision: 1, epoch: 20 })], q);
  assert.deepEqual(merged.map((r) => [r.dims.device, r.status]), [["c", "final"], ["d", "provisional"], ["e", "provisional"]]);
  // A window closed long before the newest watermark without a final is swept.
  live.offer(result({ key: "k-late", dims: { device: "f" }, start: 270_000, end: 280_000, watermark: 300_000, epoch: 20 }));
  live.sweep(2_700);
  assert.deepEqual(live.query({ ...q, to: 1e9 }).map((r) => r.dims.device), ["f"]);
});

test("a batch of provisional results fences older epochs in the results store without being stored", async () => {
  const store = new ResultsStore(new MemoryStateStore());
  const batch = JSON.stringify([result({ shard: 1, epoch: 7 }), result({ key: "x", shard: 1, epoch: 9, dims: { device: '"shard":1,"epoch":99}' } }), result({ shard: 2, epoch: 4 })]);
  const seen = epochsIn(batch);
  assert.deepEqual(seen, [
    { seen: "epoch", shard: 1, epoch: 9 },
    { seen: "epoch", shard: 2, epoch: 4 },
  ]);
  const outcome = await store.putAllDetailed([...seen, result({ status: "final", revision: 1, shard: 1, epoch: 8 }), result({ status: "final", revision: 1, shard: 2, epoch: 4 })]);
  assert.deepEqual(outcome, ["stale", "stale", "stale", "stored"]);
  assert.deepEqual((await store.storedEpochs()).get(1), 9);
});

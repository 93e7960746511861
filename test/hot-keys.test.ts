import assert from "node:assert/strict";
import { test } from "node:test";
import { parseActorKey } from "../actors/actor-keys.js";
import type { TelemetryEvent } from "../actors/event.js";
import { HotKeyDetector } from "../actors/hot-key-detector.js";
import { Router } from "../actors/router.js";
import { parseRules } from "../actors/rules.js";
import type { WindowResult } from "../actors/window-result.js";
import { MemoryStateStore } from "../runtime/state-store.js";
import { expectedWindows, prng, type ExpectedRule } from "./expected.js";
import { MemoryShards } from "./memory-shards.js";
import { startTestNats, tally } from "./harness.js";

const minute = 60_000;
const t0 = Date.UTC(2026, 10, 24, 10);

const rules = parseRules(`
metrics:
  - {name: fleet, kind: k, value: v, aggregates: [count, sum, min, max, avg, p99, distinct:source], window: 1m, rollups: [1h], lateness: 10s, horizon: 1h}
`);
const fleet = rules[0]!;
const hot = { metric: "fleet", dimsId: "[]", salts: 3, from: 0, reason: "configured" as const };

function events(seed: number, from: number, to: number, n: number, prefix: string): TelemetryEvent[] {
  const random = prng(seed);
  return Array.from({ length: n }, (_, i) => ({
    id: `${prefix}${i}`,
    ts: from + Math.floor(random() * (to - from)),
    source: `r${Math.floor(random() * 30)}`,
    kind: "k",
    tags: {},
    values: { v: Math.floor(random() * 1000) },
  }));
}

test("a salted series routes to its sub-actors, in other shards, and tells its window which ones", () => {
  const router = new Router(rules, 8);
  router.setHotSeries([hot]);
  const batch = events(1, t0, t0 + 30_000, 50, "a");
  const { byShard } = router.route(batch, -Infinity, batch.map(() => 1), 4);
  const partials = [...byShard.values()].flat();
  const subs = partials.filter((p) => parseActorKey(p.key).salt !== undefined);
  const windows = partials.filter((p) => parseActorKey(p.key).salt === undefined);
  assert.deepEqual(subs.map((p) => parseActorKey(p.key).salt), [4 % 3], "partition 4 feeds sub-actor 1");
  assert.equal(subs[0]!.agg.count, 50);
  assert.deepEqual(windows.map((w) => [w.agg.count, w.salts]), [[0, [1]]], "the window gets a marker, no events");
  // Events that arrived before the salting took effect are routed as before.
  const before = new Router(rules, 8);
  before.setHotSeries([{ ...hot, from: 2 }]);
  const unsalted = [...before.route(batch, -Infinity, batch.map(() => 1), 4).byShard.values()].flat();
  assert.deepEqual(unsalted.map((p) => [parseActorKey(p.key).salt, p.agg.count]), [[undefined, 50]]);
});

test("a batch that straddles the moment salting starts: events before it go to the window, after it to a sub-actor", () => {
  const router = new Router(rules, 8);
  router.setHotSeries([{ ...hot, from: 10 }]);
  const batch = events(2, t0, t0 + 30_000, 40, "b");
  // Salted events come first, so the window's marker exists before its own events arrive.
  const arrivals = batch.map((_, i) => (i < 25 ? 10 : 5));
  const partials = [...router.route(batch, -Infinity, arrivals, 4).byShard.values()].flat();
  const window = partials.find((p) => parseActorKey(p.key).salt === undefined)!;
  const sub = partials.find((p) => parseActorKey(p.key).salt !== undefined)!;
  assert.deepEqual([window.agg.count, window.salts, sub.agg.count], [15, [1], 25]);
  assert.ok(window.states && sub.states, "both carry the rule's other aggregates");
  assert.equal(partials.length, 2);
});

/**
 * The same events through a salted and an unsalted cluster of shards, with late events after
 * the windows are final: every window, minute and hour, ends with the same values; the salted one
 * becomes final only once every sub-actor has handed over its share.
 */
test("salted results are identical to unsalted ones, corrections included", async () => {
  const run = async (salted: boolean) => {
    const emitted: WindowResult[] = [];
    const shards = new MemoryShards(new MemoryStateStore(), (m) => (m === "fleet" ? fleet : undefined), async (r) => void emitted.push(r), {
      shards: 8,
      emitIntervalMs: 0,
      actorIdleMs: 60_000,
    });
    await shards.recover();
    const router = new Router(rules, 8);
    if (salted) router.setHotSeries([hot]);
    const random = prng(9);
    const all = events(2, t0, t0 + 3 * minute, 3000, "e");
    let watermark = t0;
    let seq = 0;
    const feed = async (batch: TelemetryEvent[], partition: number) => {
      seq++;
      for (const [shard, partials] of router.route(batch, -Infinity, batch.map(() => 1), partition).byShard) shards.shards.get(shard)!.applyBatch(`${partition}`, seq, partials);
      await shards.actors.idle();
    };
    const mark = async (wm: number) => {
      for (const shard of shards.shards.values()) {
        await shard.mark(0, { watermark: wm, idle: false });
        shard.tick();
      }
      await shards.actors.idle();
    };
    const sorted = [...all].sort((a, b) => a.ts - b.ts);
    for (let i = 0; i < sorted.length; i += 100) {
      await feed(sorted.slice(i, i + 100), Math.floor(random() * 24));
      watermark = Math.max(watermark, sorted[Math.min(i + 99, sorted.length - 1)]!.ts - 5_000);
      await mark(watermark);
    }
    // Past the hour's end + lateness (it is final), not past the minutes' horizon.
    await mark(t0 + 61 * minute);
    // Late: corrections of minutes (and the hour) already final.
    const late = events(3, t0, t0 + 3 * minute, 200, "late");
    for (let i = 0; i < late.length; i += 50) await feed(late.slice(i, i + 50), i / 50);
    await mark(t0 + 61 * minute + 1);
    shards.reset();
    return { emitted, expected: expectedWindows([{ name: "fleet", kind: "k", value: "v", groupBy: [], windows: [{ id: "1m", size: minute, slide: minute }, { id: "1h", size: 60 * minute, slide: 60 * minute }] }] as ExpectedRule[], [...all, ...late]) };
  };
  const latest = (emitted: WindowResult[]) => {
    const out = new Map<string, WindowResult>();
    for (const r of emitted) if (r.revision >= (out.get(r.key)?.revision ?? -1)) out.set(r.key, r);
    return out;
  };
  const plain = await run(false);
  const salted = await run(true);
  const want = latest(plain.emitted);
  const got = latest(salted.emitted);
  assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort(), "the same windows; no sub-actor emits results");
  for (const [key, w] of want) {
    const g = got.get(key)!;
    assert.deepEqual(g.values, w.values, key);
    assert.equal(g.eventCount, w.eventCount, key);
    assert.notEqual(g.status, "provisional", key);
  }
  // And both equal the independent computation.
  for (const [key, w] of plain.expected) {
    const [, window, start] = key.split("|");
    const r = [...got.values()].find((x) => x.window === window && x.start === Number(start))!;
    assert.deepEqual([r.values.count, r.values.sum, r.values.min, r.values.max], [w.count, w.sum, w.min, w.max], key);
  }
  // A salted window is never final before all its events are in: its first final equals the unsalted first final.
  const firstFinal = (emitted: WindowResult[]) => new Map(emitted.filter((r) => r.revision === 1).map((r) => [r.key, r.values]));
  assert.deepEqual(firstFinal(salted.emitted), firstFinal(plain.emitted));
});

test("the detector salts a series past the threshold and unsalts it after it stays quiet", () => {
  const detector = new HotKeyDetector({ thresholdPerSec: 1_000, coolAfterMs: 3_000 }, 0);
  detector.observe("m", "[]", 500);
  detector.observe("m", '["x"]', 5);
  assert.deepEqual(detector.check(1_000).hot, [], "500 events/s is under the threshold");
  detector.observe("m", "[]", 2_000);
  assert.deepEqual(detector.check(2_000), { hot: [{ metric: "m", dimsId: "[]", rate: 2_000 }], cool: [] });
  detector.observe("m", "[]", 900);
  assert.deepEqual(detector.check(3_000), { hot: [], cool: [] }, "still busy: stays hot");
  for (let t = 4_000; t <= 6_000; t += 1_000) assert.deepEqual(detector.check(t).cool, [], `quiet since 4000, not long enough at ${t}`);
  assert.deepEqual(detector.check(7_000).cool, [{ metric: "m", dimsId: "[]", rate: 0 }]);
});

test("the detector tracks exactly only series near the threshold: a million quiet series cost no entries, and a hot one among them is found by its actor keys", () => {
  const detector = new HotKeyDetector({ thresholdPerSec: 2_000, coolAfterMs: 3_000 }, 0);
  for (let i = 0; i < 1_000_000; i++) detector.observeKey(`devices\t1m\t60000\t["d${i}"]`, 1);
  // Its events arrive in two windows (keys), and in small partials, as a router batch sends them.
  for (let i = 0; i < 300; i++) detector.observeKey(`devices\t${i % 2 ? "1m" : "10s"}\t60000\t["hot"]`, 10);
  assert.ok(detector.tracking < 50, `exact entries: ${detector.tracking}`);
  const { hot } = detector.check(1_000);
  assert.deepEqual(hot.map((h) => [h.metric, h.dimsId]), [["devices", '["hot"]']]);
  // A little high at most (its bucket's counter may hold colliding series' events): never low.
  assert.ok(hot[0]!.rate >= 3_000 && hot[0]!.rate < 3_100, `rate ${hot[0]!.rate}`);
});

test("tally hot salts a series by hand and ends it; tally status shows both", async () => {
  const nats = await startTestNats();
  try {
    assert.match(await tally(["hot", "set", "fleet", '["berlin"]', "--salts", "3", "--nats", nats.url]), /salting fleet \["berlin"\] over 3 sub-actors/);
    assert.match(await tally(["hot", "ls", "--nats", nats.url]), /fleet \["berlin"\]\t3 sub-actors from .* \(configured\)/);
    assert.match(await tally(["status", "--nats", nats.url]), /hot key fleet \["berlin"\]: 3 sub-actors, salting from/);
    await tally(["hot", "unset", "fleet", '["berlin"]', "--nats", nats.url]);
    assert.match(await tally(["hot", "ls", "--nats", nats.url]), /\(configured\)/);
    assert.match(await tally(["hot", "ls", "--nats", nats.url]), / until /);
    await assert.rejects(tally(["hot", "set", "fleet", "not-json", "--nats", nats.url]), /DIMS/);
  } finally {
    await nats.cleanup();
  }
});

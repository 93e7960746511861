import assert from "node:assert/strict";
import { test } from "node:test";
import type { TelemetryEvent } from "../actors/event.js";
import { Router } from "../actors/router.js";
import { parseRules } from "../actors/rules.js";
import { windowActorKind, type WindowMessage } from "../actors/window-actor.js";
import type { WindowResult } from "../actors/window-result.js";
import { WindowShard } from "../actors/window-shard.js";
import { ActorSystem } from "../runtime/actor-system.js";
import { MemoryStateStore } from "../runtime/state-store.js";
import { MemoryShards } from "./memory-shards.js";
import { connect } from "@nats-io/transport-node";
import { expectedWindows, prng, shuffle, type ExpectedRule } from "./expected.js";
import { eventually, startTestNats, startTestNode } from "./harness.js";

const minute = 60_000;
const hour = 60 * minute;
const day = 24 * hour;
const day1 = Date.UTC(2026, 10, 24);
const day2 = day1 + day;

// `up` rolls its minutes up into hours and days; `direct` routes every event into all three
// windows. Mergeable aggregates make the two equal, sketches included.
const aggregates = "[count, sum, min, max, avg, p99, distinct:source]";
const rules = parseRules(`
metrics:
  - {name: up, kind: k, value: v, groupBy: [site], aggregates: ${aggregates}, window: 1m, rollups: [1h, 1d], lateness: 30s, horizon: 6h}
  - {name: direct, kind: k, value: v, groupBy: [site], aggregates: ${aggregates}, windows: [1m, 1h, 1d], lateness: 30s, horizon: 6h}
`);
const byName = new Map(rules.map((r) => [r.name, r]));
const sizes: [string, number][] = [["1m", minute], ["1h", hour], ["1d", day]];
const plainRule: ExpectedRule = { name: "up", kind: "k", value: "v", groupBy: ["site"], windows: sizes.map(([id, size]) => ({ id, size, slide: size })) };

/** The plain computation, independent of the product: `window|start|dims` → values. */
function plain(events: TelemetryEvent[]): Map<string, Record<string, number>> {
  const sources = new Map<string, Set<string>>();
  for (const e of events) {
    for (const [id, size] of sizes) {
      const key = `${id}|${e.ts - (e.ts % size)}|${JSON.stringify({ site: e.tags.site })}`;
      sources.set(key, (sources.get(key) ?? new Set()).add(e.source));
    }
  }
  const out = new Map<string, Record<string, number>>();
  for (const [key, w] of expectedWindows([plainRule], events)) {
    const k = key.slice("up|".length);
    out.set(k, { count: w.count, sum: w.sum, min: w.min, max: w.max, avg: w.sum / w.count, "distinct:source": sources.get(k)!.size });
  }
  return out;
}

/** Reads finish after a few event-loop turns (seeded), so reactivated actors wake up out of order, as from RocksDB. */
class ScrambledReads extends MemoryStateStore {
  constructor(private readonly random: () => number) {
    super();
  }
  override async get(key: string) {
    for (let turns = Math.floor(this.random() * 4); turns > 0; turns--) await new Promise((r) => setImmediate(r));
    return super.get(key);
  }
}

/** One shard fed like a node feeds it, with actors that passivate at once and are checkpointed after every batch. */
function pipeline(seed: number) {
  const emitted: WindowResult[] = [];
  const system = new ActorSystem<WindowMessage>(
    windowActorKind({ rule: (m) => byName.get(m), emit: (r) => emitted.push(r), emitIntervalMs: 0, now: () => 0 }),
    new ScrambledReads(prng(seed)),
    { idleMs: 0 },
  );
  const shard = new WindowShard(0, system, (m) => byName.get(m)!);
  const router = new Router(rules, 1);
  let batch = 0;
  return {
    emitted,
    system,
    async feed(events: TelemetryEvent[], watermark?: number) {
      const partials = router.route(events).byShard.get(0);
      if (partials) shard.applyBatch("0", ++batch, partials);
      if (watermark !== undefined) await shard.mark(0, { watermark, idle: false });
      await system.checkpoint();
    },
  };
}

/** The values the plain computation has (all but the sketch's p99, which the `direct` twin checks). */
function plainValues(r: WindowResult) {
  const { p99, ...values } = r.values;
  assert.equal(typeof p99, "number");
  return values;
}

const id = (r: WindowResult) => `${r.window}|${r.start}|${JSON.stringify(r.dims)}`;

/** The latest result of every window of `metric`, and the first final one. */
function results(emitted: WindowResult[], metric: string) {
  const latest = new Map<string, WindowResult>();
  const firstFinal = new Map<string, WindowResult>();
  for (const r of emitted) {
    if (r.metric !== metric) continue;
    const k = id(r);
    if (r.revision >= (latest.get(k)?.revision ?? 0)) latest.set(k, r);
    if (r.revision === 1 && !firstFinal.has(k)) firstFinal.set(k, r);
  }
  return { latest, firstFinal };
}

function events(seed: number, from: number, to: number, n: number, prefix: string): TelemetryEvent[] {
  const random = prng(seed);
  return Array.from({ length: n }, (_, i) => ({
    id: `${prefix}${i}`,
    ts: from + Math.floor(random() * (to - from)),
    source: `r${Math.floor(random() * 20)}`,
    kind: "k",
    tags: { site: random() < 0.5 ? "berlin" : "osaka" },
    values: { v: Math.floor(random() * 200) - 50 },
  }));
}

/** Roughly in time order, a few minutes out of order: like a fleet. Fed in batches, each followed by its watermark. */
async function feedInOrder(p: ReturnType<typeof pipeline>, list: TelemetryEvent[], random: () => number) {
  const sorted = [...list].sort((a, b) => a.ts - b.ts);
  for (let i = 0; i < sorted.length; i += 30) sorted.splice(i, 30, ...shuffle(sorted.slice(i, i + 30), random));
  let maxTs = -Infinity;
  for (let i = 0; i < sorted.length; i += 25) {
    const batch = sorted.slice(i, i + 25);
    for (const e of batch) maxTs = Math.max(maxTs, e.ts);
    await p.feed(batch, maxTs - 5_000);
  }
}

test("rules: rollups are tumbling multiples of the level below, on top of a tumbling window", () => {
  const [rule] = parseRules("metrics: [{name: a, kind: k, windows: [10s, 1m], rollups: [1h, 1d]}]");
  assert.deepEqual(rule!.rollups.map((w) => w.id), ["1h", "1d"]);
  const bad = (rollups: string, windows = "[1m]") => () => parseRules(`metrics: [{name: a, kind: k, windows: ${windows}, rollups: ${rollups}}]`);
  assert.throws(bad("[1h, 90m]"), /"a".*rollup 90m must be a multiple of 1h/);
  assert.throws(bad("[1h, 1h]"), /rollup 1h must be a multiple of 1h and larger/);
  assert.throws(bad("[30s]"), /rollup 30s must be a multiple of one of the tumbling windows \(1m\)/);
  assert.throws(bad("[1h/10m]"), /must be tumbling/);
  assert.throws(bad("[1h]", "[1m, 1h]"), /1h is both a window and a rollup/);
  assert.throws(bad("[1h]", "[5m/1m]"), /need a tumbling window/);
  assert.throws(bad("1h"), /"rollups" must be a list/);
});

test("hour and day rollups equal the merge of their minutes, and corrections flow up", async () => {
  const random = prng(41);
  const p = pipeline(42);

  // 1. On time (a few minutes out of order), 22:00 to 00:30 across midnight: day 1 and its hours become final.
  const early = events(1, day1 + 22 * hour, day2 + 30 * minute, 1500, "a");
  await feedInOrder(p, early, random);
  await p.feed([], day2 + 30 * minute);
  let up = results(p.emitted, "up");
  const day1Key = `1d|${day1}|{"site":"berlin"}`;
  const hour23Key = `1h|${day1 + 23 * hour}|{"site":"berlin"}`;
  assert.equal(up.latest.get(day1Key)?.status, "final");
  assert.deepEqual(plainValues(up.latest.get(hour23Key)!), plain(early).get(hour23Key));

  // 2. Late events for minutes of 22:00-24:00 of day 1, after its hours and the day are final:
  // every late batch corrects the minute, its hour and the day, one revision per minute touched.
  const late = events(2, day1 + 22 * hour, day2, 30, "late");
  const revisionsBefore = up.latest.get(hour23Key)!.revision;
  let touched = 0;
  for (let i = 0; i < late.length; i += 10) {
    const batch = late.slice(i, i + 10);
    touched += new Set(batch.filter((e) => e.tags.site === "berlin" && e.ts >= day1 + 23 * hour).map((e) => Math.floor(e.ts / minute))).size;
    await p.feed(batch);
  }
  up = results(p.emitted, "up");
  const want = plain([...early, ...late]);
  for (const key of [day1Key, hour23Key]) {
    const got = up.latest.get(key)!;
    assert.equal(got.status, "corrected", key);
    assert.deepEqual(plainValues(got), want.get(key), key);
  }
  assert.ok(touched > 0);
  assert.equal(up.latest.get(hour23Key)!.revision, revisionsBefore + touched, "one correction per late minute delta");

  // 3. The rest of day 2's first two hours, then one watermark step past the end of day 2:
  // minutes, hours and the day all fire in that one step, level by level.
  const rest = events(3, day2 + 30 * minute, day2 + 2 * hour, 600, "b");
  await feedInOrder(p, rest, random);
  await p.feed([], day2 + day + 30_000);

  const all = [...early, ...late, ...rest];
  const expected = plain(all);
  up = results(p.emitted, "up");
  const direct = results(p.emitted, "direct");
  const finals = [...up.latest].filter(([, r]) => r.status !== "provisional");
  assert.deepEqual(finals.map(([k]) => k).sort(), [...expected.keys()].sort(), "a final result for every window, no other");
  for (const [key, got] of finals) {
    assert.deepEqual(plainValues(got), expected.get(key), key);
    // Identical to routing every event into the coarse windows: sketches too, late counts too.
    const twin = direct.latest.get(key)!;
    assert.deepEqual([got.values, got.eventCount, got.lateCount, got.watermark], [twin.values, twin.eventCount, twin.lateCount, twin.watermark], key);
  }
  // The first final result of every hour and day holds every minute due by then: none arrived after it.
  for (const [key, first] of up.firstFinal) {
    if (key.startsWith("1m|")) continue;
    const twin = direct.firstFinal.get(key)!;
    assert.deepEqual([first.values, first.eventCount, first.lateCount, first.watermark], [twin.values, twin.eventCount, twin.lateCount, twin.watermark], key);
  }

  // The merge of the minutes' (and hours') latest results.
  for (const [coarse, fine] of [["1h", "1m"], ["1d", "1h"]] as const) {
    const size = coarse === "1h" ? hour : day;
    const merged = new Map<string, { count: number; sum: number; min: number; max: number }>();
    for (const [, r] of finals) {
      if (r.window !== fine) continue;
      const k = `${coarse}|${r.start - (r.start % size)}|${JSON.stringify(r.dims)}`;
      const m = merged.get(k) ?? { count: 0, sum: 0, min: Infinity, max: -Infinity };
      const v = r.values as Record<string, number>;
      merged.set(k, { count: m.count + v.count!, sum: m.sum + v.sum!, min: Math.min(m.min, v.min!), max: Math.max(m.max, v.max!) });
    }
    assert.ok(merged.size > 0);
    for (const [k, m] of merged) {
      const v = up.latest.get(k)!.values;
      assert.deepEqual([v.count, v.sum, v.min, v.max, v.avg], [m.count, m.sum, m.min, m.max, m.sum / m.count], k);
    }
  }
  await p.system.stop();
});

test("after a restart, a base window brings back the timers of the rollup windows above it", async () => {
  const store = new MemoryStateStore();
  const emitted: WindowResult[] = [];
  const settings = { shards: 4, emitIntervalMs: 0, actorIdleMs: 60_000 };
  const sink = async (r: WindowResult) => void emitted.push(r);
  const before = new MemoryShards(store, (m) => byName.get(m), sink, settings);
  await before.recover();
  const list = events(4, day1 + 10 * hour, day1 + 10 * hour + 5 * minute, 200, "c");
  for (const [shard, partials] of new Router(rules, 4).route(list).byShard) before.shards.get(shard)!.applyBatch("0", 1, partials);
  await before.checkpoint();
  before.actors.reset();

  // Only minutes are stored (none final, so the hour and day have no state yet).
  const after = new MemoryShards(store, (m) => byName.get(m), sink, settings);
  await after.recover();
  for (const shard of after.shards.values()) await shard.mark(0, { watermark: day1 + day + 30_000, idle: false });
  await after.actors.idle();
  const up = results(emitted, "up");
  const expected = plain(list);
  const finals = [...up.latest].filter(([, r]) => r.status === "final");
  assert.deepEqual(finals.map(([k]) => k).sort(), [...expected.keys()].sort());
  for (const [key, r] of finals) assert.deepEqual(plainValues(r), expected.get(key), key);
  await after.actors.stop();
});

test("through a node: 1h rollups equal a plain computation, the merge of their minutes and direct 1h windows; queries pick 1h", async () => {
  const nats = await startTestNats();
  const nc = await connect({ servers: nats.url });
  const node = await startTestNode(
    nats.url,
    `
metrics:
  - {name: hourly, kind: status, value: temperature, groupBy: [site], aggregates: [count, sum, min, max, avg, p99], window: 1m, rollups: [1h], lateness: 1h}
  - {name: hourly_direct, kind: status, value: temperature, groupBy: [site], aggregates: [count, sum, min, max, avg, p99], windows: [1m, 1h], lateness: 1h}
`,
  );
  try {
    // Six minutes across an hour boundary, four hours ago: final once the partitions idle.
    const boundary = Math.floor((Date.now() - 3 * hour) / hour) * hour;
    const random = prng(5);
    const list: TelemetryEvent[] = Array.from({ length: 900 }, (_, i) => ({
      id: `n${i}`,
      ts: boundary - 3 * minute + Math.floor(random() * 6 * minute),
      source: `r${Math.floor(random() * 30)}`,
      kind: "status",
      tags: { site: ["berlin", "osaka", "lyon"][Math.floor(random() * 3)]! },
      values: { temperature: Math.floor(random() * 80) - 20 },
    }));
    const bySource = new Map<string, TelemetryEvent[]>();
    for (const e of shuffle([...list, ...list.slice(0, 50)], random)) bySource.set(e.source, [...(bySource.get(e.source) ?? []), e]);
    for (const [source, group] of bySource) {
      for (let i = 0; i < group.length; i += 20) {
        nc.publish(`telemetry.${source}.status`, JSON.stringify(group.slice(i, i + 20).map((e) => ({ id: e.id, ts: e.ts, tags: e.tags, values: e.values }))));
      }
    }
    await nc.flush();

    const rule: ExpectedRule = { name: "hourly", kind: "status", value: "temperature", groupBy: ["site"], windows: [{ id: "1m", size: minute, slide: minute }, { id: "1h", size: hour, slide: hour }] };
    const expected = new Map([...expectedWindows([rule], list)].map(([k, w]) => [k, { count: w.count, sum: w.sum, min: w.min, max: w.max, avg: w.sum / w.count }]));
    const api = `http://127.0.0.1:${node.http.port}/v1/metrics`;
    type Point = { start: number; dims: Record<string, string>; status: string; eventCount: number; values: Record<string, number> };
    const query = async (metric: string, params: string) => (await (await fetch(`${api}/${metric}?${params}`)).json()) as { window: string; points: Point[] };
    const hourRange = `from=${boundary - hour}&to=${boundary + hour}`;
    const keyOf = (window: string, p: Point) => `hourly|${window}|${p.start}|${JSON.stringify(p.dims)}`;
    const settled = async (window: string) => {
      const { points } = await query("hourly", `window=${window}&${hourRange}`);
      const got = new Map(points.filter((p) => p.status !== "provisional").map((p) => [keyOf(window, p), p]));
      const want = [...expected].filter(([k]) => k.startsWith(`hourly|${window}|`));
      const exact = want.length === got.size && want.every(([k, w]) => got.get(k) && JSON.stringify(plainOf(got.get(k)!)) === JSON.stringify(w));
      return exact ? got : undefined;
    };
    const plainOf = (p: Point) => ({ count: p.values.count, sum: p.values.sum, min: p.values.min, max: p.values.max, avg: p.values.avg });
    const hours = await eventually(() => settled("1h"), 30_000, "the 1h rollups to equal the plain computation");
    const minutes = await eventually(() => settled("1m"), 10_000, "the 1m windows to equal the plain computation");
    assert.equal(hours.size, 6, "two hours, three sites");

    // The merge of the minutes.
    for (const [key, h] of hours) {
      const mine = [...minutes.values()].filter((m) => m.start - (m.start % hour) === h.start && m.dims.site === h.dims.site).map((m) => m.values);
      const sum = mine.reduce((a, v) => a + v.sum!, 0);
      const count = mine.reduce((a, v) => a + v.count!, 0);
      assert.deepEqual(plainOf(h), { count, sum, min: Math.min(...mine.map((v) => v.min!)), max: Math.max(...mine.map((v) => v.max!)), avg: sum / count }, key);
      assert.equal(h.eventCount, count);
    }
    // The same as routing every event into 1h windows, the sketch included.
    const direct = await eventually(async () => {
      const { points } = await query("hourly_direct", `window=1h&${hourRange}`);
      const finals = points.filter((p) => p.status !== "provisional");
      return finals.length === hours.size && finals.every((p) => p.values.count === hours.get(keyOf("1h", p))?.values.count) ? finals : undefined;
    }, 10_000, "the direct 1h windows");
    for (const p of direct) assert.deepEqual(hours.get(keyOf("1h", p))!.values, p.values);

    // Without window=, an hour-aligned range is answered by the rollup; a minute-aligned one by minutes.
    const picked = await query("hourly", hourRange);
    assert.equal(picked.window, "1h");
    assert.deepEqual(new Map(picked.points.map((p) => [keyOf("1h", p), p.values])), new Map([...hours].map(([k, p]) => [k, p.values])));
    assert.equal((await query("hourly", `from=${boundary - 3 * minute}&to=${boundary + 3 * minute}`)).window, "1m");
    const described = (await (await fetch(api)).json()) as { metrics: { name: string; windows: string[]; rollups: string[] }[] };
    assert.deepEqual(described.metrics.find((m) => m.name === "hourly")!.windows, ["1m", "1h"]);
  } finally {
    await node.cleanup();
    await nc.close();
    await nats.cleanup();
  }
});

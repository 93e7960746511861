import assert from "node:assert/strict";
import { test } from "node:test";
import { addValue, aggValues, emptyAgg, mergeAgg } from "../actors/aggregates.js";
import { decodePayload } from "../actors/decode.js";
import { defaultLimits, type TelemetryEvent } from "../actors/event.js";
import { RecentIds, staggeredLoad } from "../actors/recent-ids.js";
import { Router } from "../actors/router.js";
import { parseRules } from "../actors/rules.js";
import { storedWindowTimes, windowActorKind, type WindowMessage } from "../actors/window-actor.js";
import type { WindowResult } from "../actors/window-result.js";
import { purgeMarginMs, WindowShard } from "../actors/window-shard.js";
import { makeWindow, parseWindow, windowStarts } from "../actors/windows.js";
import { ActorSystem } from "../runtime/actor-system.js";
import { MemoryStateStore } from "../runtime/state-store.js";
import { expectedWindows, prng } from "./expected.js";

const minute = 60_000;
const t0 = Date.UTC(2026, 10, 24, 10, 0, 0);

test("tumbling windows are clock-aligned: [10:00:00, 10:01:00)", () => {
  const m = parseWindow("1m");
  assert.deepEqual(windowStarts(m, t0), [t0]);
  assert.deepEqual(windowStarts(m, t0 + minute - 1), [t0]);
  assert.deepEqual(windowStarts(m, t0 + minute), [t0 + minute]);
  assert.deepEqual(windowStarts(parseWindow("10s"), t0 + 25_000), [t0 + 20_000]);
  assert.deepEqual(windowStarts(parseWindow("1h"), t0 + 59 * minute), [t0]);
  assert.deepEqual(windowStarts(m, 59_999), [0]);
});

test("sliding windows: every window of `size` starting on a multiple of `slide` that holds the event", () => {
  const w = parseWindow({ size: "5m", slide: "30s" });
  assert.equal(w.id, "5m/30s");
  const starts = windowStarts(w, t0 + 10_000);
  assert.equal(starts.length, 10);
  for (const s of starts) assert.ok(s <= t0 + 10_000 && t0 + 10_000 < s + 5 * minute && s % 30_000 === 0);
  assert.deepEqual(parseWindow("5m/30s"), w);
  assert.throws(() => makeWindow(5 * minute, 7_000), /multiple/);
  assert.throws(() => parseWindow("soon"), /not a duration/);
});

test("rules: defaults, validation with the rule and field at fault", () => {
  const [rule] = parseRules(`{"metrics": [{"name": "battery", "kind": "status", "value": "battery", "groupBy": ["site"], "aggregates": ["count", "avg"]}]}`);
  assert.equal(rule!.windows[0]!.id, "1m");
  assert.equal(rule!.latenessMs, 60_000);
  assert.throws(() => parseRules("metrics: [{name: x, aggregates: [avg]}]"), /"x".*needs a "value"/);
  assert.throws(() => parseRules("metrics: [{name: x, aggregates: [p99x]}]"), /unknown aggregate/);
  assert.throws(() => parseRules("metrics: [{name: 'a b'}]"), /"name"/);
  assert.throws(() => parseRules("metrics: [{name: a}, {name: a}]"), /twice/);
  assert.throws(() => parseRules("metrics: [{name: a, lateness: later}]"), /"a".*duration/);
  assert.throws(() => parseRules("[]"), /"metrics"/);
});

test("aggregates form a monoid: merging partials equals aggregating everything", () => {
  const random = prng(3);
  const values = Array.from({ length: 500 }, () => Math.floor(random() * 1000) - 500);
  const whole = emptyAgg();
  for (const v of values) addValue(whole, v);
  const parts = [emptyAgg(), emptyAgg(), emptyAgg()];
  values.forEach((v, i) => addValue(parts[i % 3]!, v));
  const ab = emptyAgg();
  mergeAgg(ab, parts[2]!);
  mergeAgg(ab, parts[0]!);
  mergeAgg(ab, emptyAgg());
  mergeAgg(ab, parts[1]!);
  assert.deepEqual(ab, whole);
  assert.deepEqual(aggValues(whole, ["count", "sum", "min", "max", "avg"]), {
    count: 500,
    sum: values.reduce((a, b) => a + b, 0),
    min: Math.min(...values),
    max: Math.max(...values),
    avg: values.reduce((a, b) => a + b, 0) / 500,
  });
  assert.deepEqual(aggValues(emptyAgg(), ["min", "avg"]), { min: null, avg: null });
});

test("the router combines a batch per actor key and spreads keys over shards", () => {
  const rules = parseRules(`
metrics:
  - { name: temp, kind: status, value: temperature, groupBy: [site], aggregates: [count, sum], windows: [1m, 10s] }
  - { name: errs, kind: error, groupBy: [code, source], where: { site: berlin } }
`);
  const random = prng(11);
  const events: TelemetryEvent[] = Array.from({ length: 2000 }, (_, i) => ({
    id: String(i),
    ts: t0 + Math.floor(random() * 3 * minute),
    source: `r${i % 7}`,
    kind: random() < 0.7 ? "status" : "error",
    tags: { site: random() < 0.5 ? "berlin" : "osaka", code: "E1" },
    values: (random() < 0.9 ? { temperature: Math.floor(random() * 50) } : {}) as Record<string, number>,
  }));
  const routed = new Router(rules, 8).route(events);
  const got = new Map<string, number>();
  for (const partials of routed.byShard.values()) {
    for (const p of partials) got.set(`${p.metric}|${p.window}|${p.start}|${JSON.stringify(p.dims)}`, p.agg.count);
  }
  const berlinErrors = events.filter((e) => e.kind === "error" && e.tags.site === "berlin");
  const want = expectedWindows(
    [
      { name: "temp", kind: "status", value: "temperature", groupBy: ["site"], windows: [{ id: "1m", size: minute, slide: minute }, { id: "10s", size: 10_000, slide: 10_000 }] },
      { name: "errs", kind: "error", groupBy: ["code", "source"], windows: [{ id: "1m", size: minute, slide: minute }] },
    ],
    events.filter((e) => e.kind === "status" || berlinErrors.includes(e)),
  );
  assert.deepEqual(new Map([...got].sort()), new Map([...want].map(([k, v]) => [k, v.count] as [string, number]).sort()));
  assert.ok(routed.byShard.size > 4, "keys spread over shards");
});

test("decoding: batches are judged event by event; nothing throws", () => {
  const now = t0;
  const enc = (v: unknown) => Buffer.from(JSON.stringify(v));
  const ok = decodePayload(enc([{ id: "a", ts: "2026-11-24T10:00:00Z", tags: { s: "x" }, values: { v: 1 } }, { id: "b" }]), "r1", "status", false, now, defaultLimits);
  assert.equal(ok.events.length, 1);
  assert.equal(ok.events[0]!.ts, t0);
  assert.deepEqual([ok.events[0]!.source, ok.events[0]!.kind], ["r1", "status"]);
  assert.equal(ok.rejects[0]!.reason, "missing_ts");
  const big = decodePayload(new Uint8Array(defaultLimits.maxPayloadBytes + 1), "r", "k", false, now, defaultLimits);
  assert.equal(big.rejects[0]!.reason, "oversized");
  const random = prng(5);
  for (let i = 0; i < 2000; i++) {
    const bytes = Uint8Array.from({ length: Math.floor(random() * 64) }, () => Math.floor(random() * 256));
    const out = decodePayload(bytes, "r", "k", random() < 0.5, now, defaultLimits);
    assert.ok(out.events.length + out.rejects.length >= 0);
  }
});

test("recent ids: a duplicate within the horizon counts once; ids expire after it", () => {
  const ids = new RecentIds(10_000, 0);
  assert.equal(ids.seen("a", 0), false);
  assert.equal(ids.seen("a", 9_000), true);
  assert.equal(ids.seen("b", 5_000), false);
  assert.equal(ids.seen("b", 14_999), true, "kept for the whole horizon");
  assert.equal(ids.seen("a", 30_000), false);
  assert.equal(ids.size, 1);
});

test("recent ids: tables fed alike rebuild at staggered loads, and every load remembers every id", () => {
  const loads = Array.from({ length: 24 }, (_, i) => staggeredLoad(i));
  assert.ok(loads.every((l) => l >= 0.5 && l <= 0.8));
  assert.equal(new Set(loads.map((l) => l.toFixed(3))).size, 24, "no two partitions rebuild at the same load");
  const growth = (load: number) => {
    const ids = new RecentIds(60_000, 0, 10, load);
    const sizes: number[] = [];
    for (let i = 0; i < 50_000; i++) {
      assert.equal(ids.seen(`id-${i}`, 0), false);
      if (sizes.at(-1) !== ids.bytes) sizes.push(ids.bytes);
    }
    for (let i = 0; i < 50_000; i += 7) assert.equal(ids.seen(`id-${i}`, 0), true);
    return sizes;
  };
  assert.notDeepEqual(growth(0.5), growth(0.8), "different loads grow the table at different points");
});

test("recent ids: a rebuild migrates a slice per insert; ids from before, during and after it are all seen", () => {
  // Rebuilt at once, a table paused its router for 30-270 ms (the whole node, when many tables rebuilt together).
  const ids = new RecentIds(60_000, 0);
  const id = (i: number) => `event-${i}`;
  let n = 0;
  while (!ids.migrating && n < 100_000) assert.equal(ids.seen(id(n++), 0), false);
  assert.ok(ids.migrating, "a rebuild leaves a migration under way");
  const before = n;
  const both = ids.bytes; // the new table, and the old one beside it until it is moved
  let during = 0;
  for (; ids.migrating; during++) {
    assert.equal(ids.seen(id(n++), 0), false);
    // A duplicate of an id from before the migration, and of one recorded during it, is caught.
    assert.equal(ids.seen(id(during % before), 0), true, `id ${during % before} (before) during the migration`);
    assert.equal(ids.seen(id(n - 1 - (during % 7)), 0), true);
  }
  assert.ok(during > 10 && during < before, `moved over ${during} inserts, not at once`);
  assert.ok(ids.bytes < both, "the old table is dropped once moved");
  for (let k = 0; k < 1000; k++) assert.equal(ids.seen(id(n++), 0), false);
  for (let i = 0; i < n; i++) assert.equal(ids.seen(id(i), 0), true, `id ${i} of ${n} after the migration`);
  assert.equal(ids.size, n);
});

test("recent ids: expiry holds across a migration (kept a whole horizon, gone a generation after it)", () => {
  // Horizon 10 s in 10 generations of 1 s.
  const ids = new RecentIds(10_000, 0);
  for (let i = 0; i < 1000; i++) ids.seen(`old-${i}`, 0);
  let n = 0;
  let t = 9_000;
  while (!ids.migrating && n < 100_000) ids.seen(`new-${n++}`, t);
  assert.ok(ids.migrating);
  let checks = 0;
  for (; ids.migrating; checks++) {
    ids.seen(`new-${n++}`, t);
    // Written at 0: seen for the whole horizon while the table migrates, gone a generation after it.
    if (checks < 20) assert.equal(ids.seen(`old-${checks}`, t), true, `old-${checks} within the horizon`);
    else {
      t = 11_500;
      assert.equal(ids.seen(`old-${500 + checks}`, t), false, `old-${500 + checks} expired`);
    }
  }
  assert.ok(checks > 20 && checks < 480, `${checks}`);
  for (let i = 0; i < 500; i += 37) assert.equal(ids.seen(`old-${i}`, t), false, `old-${i} expired (checked within the horizon or not)`);
  for (let i = 0; i < n; i += 13) assert.equal(ids.seen(`new-${i}`, t), true, `new-${i} kept`);
  // Migrations after expiry move only the live ids.
  const later = new RecentIds(10_000, 0);
  for (let i = 0; i < 20_000; i++) later.seen(`a-${i}`, 0);
  for (let i = 0; i < 20_000; i++) later.seen(`b-${i}`, 12_000 + (i % 1000));
  let c = 0;
  while (later.migrating) later.seen(`c-${c++}`, 13_000);
  assert.equal(later.size, 20_000 + c);
  for (let i = 0; i < 20_000; i += 101) assert.equal(later.seen(`b-${i}`, 13_000), true);
  for (let i = 0; i < 20_000; i += 101) assert.equal(later.seen(`a-${i}`, 13_000), false);
});

test("recent ids: after expiry a table shrinks, over many inserts too", () => {
  const ids = new RecentIds(10_000, 0);
  for (let i = 0; i < 200_000; i++) ids.seen(`a-${i}`, 0);
  while (ids.migrating) ids.seen(`a-${Math.random()}`, 0);
  const peak = ids.bytes;
  // Then 1,000 ids a second: ~11k live at any time. (Starting within the horizon: after a gap longer
  // than it, every id has expired and the table starts afresh, small, at once.)
  let n = 0;
  const at = (i: number) => 9_000 + Math.floor(i / 1000) * 1000;
  const shrunk = () => ids.bytes < peak && !ids.migrating;
  let longest = 0;
  for (let during = 0; n < 2_000_000 && !shrunk(); n++) {
    ids.seen(`b-${n}`, at(n));
    during = ids.migrating ? during + 1 : 0;
    longest = Math.max(longest, during);
  }
  assert.ok(shrunk(), `${ids.bytes} < ${peak}`);
  assert.ok(longest > 100, `moved over ${longest} inserts, not at once`);
  for (let i = n - 9_000; i < n; i += 7) assert.equal(ids.seen(`b-${i}`, at(n)), true, `b-${i} of ${n}`);
  for (let i = 0; i < 200_000; i += 997) assert.equal(ids.seen(`a-${i}`, at(n)), false);
});

test("recent ids: restored fingerprints during a migration, and an id whose probe runs into the moved part", () => {
  const ids = new RecentIds(60_000, 0);
  const f = (a: number, b: number) => Uint32Array.of(a, b, 7);
  // A cluster at the table's end that wraps to slots 0-99, so the migration starts at slot 100.
  for (let k = 0; k < 100; k++) assert.equal(ids.seenFingerprint(f(4095, k), 0, 0), false);
  let k = 0;
  while (!ids.migrating && k < 100_000) ids.seenFingerprint(f(200 + (k % 3800), 1_000_000 + k++), 0, 0);
  assert.ok(ids.migrating);
  // Home 50 is not moved yet, and its probe sequence runs on to slot 100, moved first: recorded in the new table.
  assert.equal(ids.seenFingerprint(f(50, 42), 0, 0), false);
  assert.equal(ids.seenFingerprint(f(50, 42), 0, 0), true);
  assert.equal(ids.seenFingerprint(f(4095, 3), 0, 0), true, "found where it wrapped, before the moved part");
  const restored = new Uint32Array(3 * 500);
  for (let r = 0; r < 500; r++) restored.set(f(r * 97, 5_000_000 + r), 3 * r);
  ids.restoreFingerprints(restored, 0);
  for (let r = 0; r < 500; r++) assert.equal(ids.seenFingerprint(restored, r, 0), true, `restored ${r}`);
  assert.ok(ids.migrating || k > 0);
  while (ids.migrating) ids.seenFingerprint(f(200 + (k % 3800), 1_000_000 + k++), 0, 0);
  for (let r = 0; r < 500; r++) assert.equal(ids.seenFingerprint(restored, r, 0), true, `restored ${r} after`);
  assert.equal(ids.seenFingerprint(f(50, 42), 0, 0), true);
  for (let j = 0; j < 100; j++) assert.equal(ids.seenFingerprint(f(4095, j), 0, 0), true);
  for (let j = 0; j < k; j++) assert.equal(ids.seenFingerprint(f(200 + (j % 3800), 1_000_000 + j), 0, 0), true);
  assert.equal(ids.size, 100 + k + 1 + 500);
});

test("recent ids: generation tags repeat every 255 generations, yet an expired id never comes back", () => {
  // A slot holds its generation in 8 bits. Horizon 10 s in 10 generations of 1 s; at 256 s the
  // tag of second 0 is live again, so a slot kept from then would read as a duplicate.
  const quiet = new RecentIds(10_000, 0);
  for (let i = 0; i < 1000; i++) assert.equal(quiet.seen(`a-${i}`, 0), false);
  let n = 0;
  for (let t = 1_000; t <= 255_000; t += 1_000) for (let k = 0; k < 5; k++) quiet.seen(`b-${n++}`, t);
  for (let i = 0; i < 1000; i++) assert.equal(quiet.seen(`a-${i}`, 255_500), false, `a-${i} expired 245 generations ago`);
  for (let i = n - 50; i < n; i++) assert.equal(quiet.seen(`b-${i}`, 255_500), true, `b-${i} within the horizon`);

  // A migration left under way by a router that then routes one event a second is finished before
  // its old table's tags could repeat.
  const slow = new RecentIds(10_000, 0);
  let m = 0;
  while (m < 20_000 || !slow.migrating) slow.seen(`c-${m++}`, 0); // a table of 64k slots, moved over ~2k inserts
  const first = m;
  for (let t = 1_000; t <= 255_000; t += 1_000) {
    slow.seen(`c-${m++}`, t);
    if (t === 150_000) assert.ok(slow.migrating, "one insert a second moves a large table slowly");
  }
  assert.ok(!slow.migrating);
  for (let i = 0; i < first; i += 3) assert.equal(slow.seen(`c-${i}`, 255_500), false, `c-${i} expired`);
  for (let i = m - 10; i < m; i++) assert.equal(slow.seen(`c-${i}`, 255_500), true, `c-${i} within the horizon`);
});

test("window lifecycle: provisional while open, final past end + lateness, corrected for late data", async () => {
  const rules = parseRules("metrics: [{name: m, kind: k, value: v, aggregates: [count, sum, max], window: 1m, lateness: 30s}]");
  const emitted: WindowResult[] = [];
  let clock = 0;
  const store = new MemoryStateStore();
  const system = new ActorSystem<WindowMessage>(
    windowActorKind({ rule: () => rules[0], emit: (r) => emitted.push(r), emitIntervalMs: 100, now: () => clock }),
    store,
  );
  const shard = new WindowShard(0, system, () => ({ latenessMs: 30_000, horizonMs: 3_600_000 }));
  const router = new Router(rules, 1);
  const send = (ts: number, v: number, id: string) => {
    for (const p of router.route([{ id, ts, source: "s", kind: "k", tags: {}, values: { v } }]).byShard.get(0)!) shard.apply(p);
  };
  send(t0 + 1000, 5, "1");
  await system.idle();
  assert.equal(emitted.length, 1);
  assert.deepEqual([emitted[0]!.status, emitted[0]!.revision, emitted[0]!.values], ["provisional", 0, { count: 1, sum: 5, max: 5 }]);
  send(t0 + 2000, 7, "2"); // within the throttle: no new result yet
  await system.idle();
  assert.equal(emitted.length, 1);

  await shard.mark(0, { watermark: t0 + minute + 29_999, idle: false }); // not yet past end + lateness
  await system.idle();
  assert.equal(emitted.length, 1);
  await shard.mark(0, { watermark: t0 + minute + 30_000, idle: false });
  await system.idle();
  const final = emitted.at(-1)!;
  assert.deepEqual([final.status, final.revision, final.values, final.lateCount], ["final", 1, { count: 2, sum: 12, max: 7 }, 0]);
  assert.equal(final.watermark, t0 + minute + 30_000);
  assert.equal(system.activeCount, 0, "passivated once final");

  clock = 10_000;
  send(t0 + 3000, 10, "3"); // late: reactivated from its snapshot, corrected
  await system.idle();
  const corrected = emitted.at(-1)!;
  assert.deepEqual([corrected.status, corrected.revision, corrected.values, corrected.lateCount, corrected.eventCount], ["corrected", 2, { count: 3, sum: 22, max: 10 }, 1, 3]);
  await system.checkpoint();
  assert.ok(await store.get(`actor/window/${final.key}`), "kept within the horizon");

  // Past end + lateness + horizon (+ the purge margin) the window's state is forgotten.
  await shard.mark(0, { watermark: t0 + minute + 30_000 + 3_600_000 + purgeMarginMs, idle: false });
  await system.checkpoint();
  assert.equal(await store.get(`actor/window/${final.key}`), undefined);
  assert.equal(emitted.at(-1), corrected, "purging emits nothing");
  await system.stop();
});

test("a shard drops a replayed router batch, and its watermark and applied batches survive save/restore", async () => {
  const rules = parseRules("metrics: [{name: m, kind: k, window: 1m, lateness: 0s}]");
  const emitted: WindowResult[] = [];
  const system = new ActorSystem<WindowMessage>(
    windowActorKind({ rule: () => rules[0], emit: (r) => emitted.push(r), emitIntervalMs: 0, now: () => 0 }),
    new MemoryStateStore(),
  );
  const shard = new WindowShard(0, system, () => ({ latenessMs: 0, horizonMs: 0 }));
  const partials = new Router(rules, 1).route([{ id: "a", ts: t0, source: "s", kind: "k", tags: {}, values: {} }]).byShard.get(0)!;
  assert.equal(shard.applyBatch("3", 100, partials), true);
  assert.equal(shard.applyBatch("3", 100, partials), false, "the same batch again");
  assert.equal(shard.applyBatch("3", 90, partials), false, "an older batch");
  assert.equal(shard.applyBatch("4", 100, partials), true, "another partition's batch");
  await shard.mark(4, { watermark: t0 + 20_000, idle: false });
  await shard.mark(3, { watermark: t0 + 30_000, idle: false });
  const restored = new WindowShard(0, system, () => ({ latenessMs: 0, horizonMs: 0 }));
  restored.restore(JSON.parse(JSON.stringify(shard.save())));
  assert.equal(restored.watermark, t0 + 20_000);
  assert.equal(restored.applyBatch("3", 100, partials), false);
  restored.schedule(partials[0]!.key, t0 + minute, true);
  await restored.mark(4, { watermark: t0 + minute, idle: false });
  await restored.mark(3, { watermark: t0 + minute, idle: false });
  await system.idle();
  const final = emitted.find((r) => r.status === "final")!;
  assert.equal(final.eventCount, 2);
});

test("a shard reads a window's stored state only for windows it may have stored: new ones start empty, restored ones are read", async () => {
  const rules = parseRules("metrics: [{name: m, kind: k, groupBy: [d], window: 1m, lateness: 0s}]");
  const store = new MemoryStateStore();
  let reads = 0;
  const counted = Object.assign(Object.create(store) as MemoryStateStore, {
    get: (key: string) => {
      reads++;
      return store.get(key);
    },
  });
  const event = (id: string, d: string) => ({ id, ts: t0 + 1_000, source: "s", kind: "k", tags: { d }, values: {} });
  const start = () => {
    const emitted: WindowResult[] = [];
    const system = new ActorSystem<WindowMessage>(windowActorKind({ rule: () => rules[0], emit: (r) => emitted.push(r), emitIntervalMs: 0, now: () => 0 }), counted);
    return { emitted, system, shard: new WindowShard(0, system, () => ({ latenessMs: 0, horizonMs: minute })) };
  };
  const router = new Router(rules, 1);
  const first = start();
  first.shard.applyBatch("0", 1, router.route([event("a", "x"), event("b", "y")]).byShard.get(0)!);
  await first.system.checkpoint();
  assert.equal(reads, 0, "two new windows: nothing to read");

  // A restart: the stored windows are restored first (as a hosted shard does), then more partials.
  const second = start();
  for await (const [key, bytes] of second.system.storedStates()) {
    const { end, open } = storedWindowTimes(bytes);
    second.shard.restoreWindow(key, end, open);
  }
  second.shard.applyBatch("0", 2, router.route([event("c", "x"), event("d", "z")]).byShard.get(0)!);
  await second.shard.mark(0, { watermark: t0 + minute, idle: false });
  await second.system.idle();
  assert.equal(reads, 2, "the stored windows are read (x for its partial, y to go final), the new window z is not");
  const finals = new Map(second.emitted.filter((r) => r.status === "final").map((r) => [r.dims.d, r.eventCount]));
  assert.deepEqual(Object.fromEntries(finals), { x: 2, y: 1, z: 1 });
});

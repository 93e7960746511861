import assert from "node:assert/strict";
import { test } from "node:test";
import { resolveAggregation, type Aggregation } from "../actors/aggregations/aggregation.js";
import { quantileRelativeAccuracy } from "../actors/aggregations/builtin.js";
import type { TelemetryEvent } from "../actors/event.js";
import { Router } from "../actors/router.js";
import { parseRules } from "../actors/rules.js";
import { windowActorKind, type WindowMessage } from "../actors/window-actor.js";
import type { WindowResult } from "../actors/window-result.js";
import { WindowShard } from "../actors/window-shard.js";
import { ActorSystem } from "../runtime/actor-system.js";
import { MemoryStateStore } from "../runtime/state-store.js";
import { decodeMailbox, encodeMailbox } from "../node/mailbox-codec.js";
import { prng } from "./expected.js";

const t0 = Date.UTC(2026, 10, 24, 10, 0, 0);

function events(seed: number, n: number, skewed: boolean): TelemetryEvent[] {
  const random = prng(seed);
  return Array.from({ length: n }, (_, i) => {
    // Skewed: a Pareto-like tail and Zipf-like codes; uniform otherwise.
    const u = random();
    const value = skewed ? Math.round(100 / Math.pow(1 - u * 0.999, 1.2)) / 10 : Math.round(u * 10_000) / 10;
    const code = skewed ? `E${Math.floor(1 / (random() * 0.98 + 0.02))}` : `E${Math.floor(random() * 20)}`;
    return { id: `e${i}`, ts: t0 + i, source: `robot-${Math.floor(random() * 500)}`, kind: "perf", tags: { code }, values: { v: value } };
  });
}

function aggregate(aggregation: Aggregation, evs: TelemetryEvent[]) {
  const state = aggregation.init();
  for (const e of evs) aggregation.add(state, e.values.v, e);
  return state;
}

const names = ["p50", "p99", "p99.9", "hist", "last", "distinct:source", "top3:code"];

for (const name of names) {
  test(`${name}: merge of parts equals aggregating the union; commutative, associative; encode/decode round-trips`, () => {
    const aggregation = resolveAggregation(name);
    const evs = events(1, 3000, true);
    const parts = [evs.slice(0, 700), evs.slice(700, 2000), evs.slice(2000)];
    const whole = aggregation.result(aggregate(aggregation, evs), { sizeMs: 60_000 });
    const roundTrip = (s: unknown) => aggregation.decode(aggregation.encode(s));
    const [a, b, c] = parts.map((p) => roundTrip(aggregate(aggregation, p)));
    const abc = aggregation.merge(aggregation.merge(roundTrip(a), roundTrip(b)), roundTrip(c));
    const cba = aggregation.merge(roundTrip(c), aggregation.merge(roundTrip(b), roundTrip(a)));
    const bca = aggregation.merge(aggregation.merge(roundTrip(b), roundTrip(c)), roundTrip(a));
    // Sketch bins merge exactly; a quantile read from them may differ in the last floating-point bits.
    const same = (got: unknown) =>
      typeof whole === "number" ? assert.ok(Math.abs((got as number) - whole) <= 1e-12 * Math.abs(whole), `${got} vs ${whole}`) : assert.deepEqual(got, whole);
    for (const merged of [abc, cba, bca]) same(aggregation.result(merged, { sizeMs: 60_000 }));
    same(aggregation.result(roundTrip(abc), { sizeMs: 60_000 }));
    assert.deepEqual(aggregation.result(aggregation.init(), { sizeMs: 60_000 }), aggregation.result(roundTrip(aggregation.init()), { sizeMs: 60_000 }));
  });
}

test("percentiles of merged and decoded sketches read exactly as one sketch of everything, negative values included", () => {
  const random = prng(12);
  const evs = events(12, 2000, false).map((e) => ({ ...e, values: { v: Math.round((random() - 0.6) * 1000) } }));
  for (const name of ["p1", "p50", "p99"]) {
    const aggregation = resolveAggregation(name);
    const roundTrip = (s: unknown) => aggregation.decode(aggregation.encode(s));
    const whole = aggregation.result(aggregate(aggregation, evs), { sizeMs: 60_000 }) as number;
    const merged = aggregation.merge(roundTrip(aggregate(aggregation, evs.slice(0, 900))), roundTrip(aggregate(aggregation, evs.slice(900))));
    assert.equal(aggregation.result(merged, { sizeMs: 60_000 }), whole, name);
    // A decoded sketch reads exactly what the live one did: results never depend on a passivation.
    assert.equal(aggregation.result(roundTrip(aggregate(aggregation, evs)), { sizeMs: 60_000 }), whole, name);
  }
});

test(`percentiles are within ${quantileRelativeAccuracy * 100}% of the exact value at that rank, on uniform and skewed data`, () => {
  for (const skewed of [false, true]) {
    const evs = events(skewed ? 7 : 8, 100_000, skewed);
    const sorted = evs.map((e) => e.values.v!).sort((x, y) => x - y);
    for (const p of [0, 1, 50, 90, 99, 99.9, 100]) {
      const aggregation = resolveAggregation(`p${p}`);
      const got = aggregation.result(aggregate(aggregation, evs), { sizeMs: 60_000 }) as number;
      const exact = sorted[Math.floor((p / 100) * (sorted.length - 1))]!;
      assert.ok(Math.abs(got - exact) <= quantileRelativeAccuracy * Math.abs(exact) + 1e-9, `p${p} ${skewed ? "skewed" : "uniform"}: ${got} vs ${exact}`);
    }
  }
});

test("distinct counts are exact while small and within 3 standard errors (0.81% each) when large", () => {
  const aggregation = resolveAggregation("distinct:source");
  for (const n of [10, 1_000, 200_000]) {
    const state = aggregation.init();
    for (let i = 0; i < n * 2; i++) aggregation.add(state, undefined, { id: "", ts: 0, source: `s${i % n}`, kind: "k", tags: {}, values: {} });
    const got = aggregation.result(state, { sizeMs: 60_000 }) as number;
    if (n <= 1_000) assert.equal(got, n);
    else assert.ok(Math.abs(got - n) / n <= 3 * 0.0081, `${got} vs ${n}`);
  }
});

test("top-K reports the heaviest keys with counts in descending order, exact while keys fit", () => {
  const aggregation = resolveAggregation("top3:code");
  const evs = events(3, 20_000, true);
  const exact = new Map<string, number>();
  for (const e of evs) exact.set(e.tags.code!, (exact.get(e.tags.code!) ?? 0) + 1);
  const want = [...exact].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, 3).map(([key, count]) => ({ key, count }));
  assert.ok(exact.size <= 64, "within capacity, so exact");
  assert.deepEqual(aggregation.result(aggregate(aggregation, evs), { sizeMs: 60_000 }), want);
});

test("histogram buckets (1-2-5 scale) count every value once", () => {
  const aggregation = resolveAggregation("hist");
  const state = aggregation.init();
  for (const v of [0.3, 1, 1.5, 2, 3, 7, 70, -4, 0]) aggregation.add(state, v, { id: "", ts: 0, source: "s", kind: "k", tags: {}, values: {} });
  assert.deepEqual(aggregation.result(state, { sizeMs: 60_000 }), { "-5": 1, "0": 1, "0.5": 1, "1": 1, "2": 2, "5": 1, "10": 1, "100": 1 });
});

test("a developer's own aggregation plugs in: rules name it, the pipeline merges it, results carry it", async () => {
  // The README's example plugin, loaded as `tally node --plugin` would.
  await import(new URL("../../examples/stddev-aggregation.js", import.meta.url).href);
  const rules = parseRules("metrics: [{name: cycle, kind: perf, value: v, aggregates: [count, stddev, p50, top2:code, distinct:source], window: 1m, lateness: 0s}]");
  const emitted: WindowResult[] = [];
  const system = new ActorSystem<WindowMessage>(
    windowActorKind({ rule: () => rules[0], emit: (r) => emitted.push(r), emitIntervalMs: 0, now: () => 0 }),
    new MemoryStateStore(),
  );
  const shard = new WindowShard(0, system, () => ({ latenessMs: 0, horizonMs: 0 }));
  const router = new Router(rules, 1);
  const evs = events(5, 2_000, false).map((e) => ({ ...e, ts: t0 + (e.ts % 60_000) }));
  // Three router batches, each through the mailbox codec, as in a node.
  for (const part of [evs.slice(0, 500), evs.slice(500, 1500), evs.slice(1500)]) {
    const wire = decodeMailbox(encodeMailbox({ type: "partials", partition: 0, first: 1, last: 1, partials: router.route(part).byShard.get(0)! }));
    assert.equal(wire.type, "partials");
    if (wire.type === "partials") for (const p of wire.partials) shard.apply(p);
  }
  await shard.mark(0, { watermark: t0 + 60_000, idle: false });
  await system.idle();
  const final = emitted.find((r) => r.status === "final")!;
  const xs = evs.map((e) => e.values.v!);
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const sd = Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / (xs.length - 1));
  assert.equal(final.values.count, 2_000);
  assert.ok(Math.abs((final.values.stddev as number) - sd) < 1e-9 * sd, `${final.values.stddev} vs ${sd}`);
  assert.equal((final.values["top2:code"] as unknown[]).length, 2);
  assert.equal(final.values["distinct:source"], new Set(evs.map((e) => e.source)).size);
  assert.equal(typeof final.values.p50, "number");
});

import { test } from "node:test";
import assert from "node:assert/strict";
import { Fleet, mulberry32, DEFAULT_SITES, type FleetOptions } from "../sim/fleet.js";
import type { TelemetryEvent } from "../actors/event.js";

const T0 = 1_700_000_000_000;

/** Poll a fleet every stepMs for durationMs of simulated time. */
function run(opts: FleetOptions, durationMs: number, stepMs = 250): TelemetryEvent[] {
  const f = new Fleet({ startMs: T0, ...opts });
  const out: TelemetryEvent[] = [];
  for (let t = T0 + stepMs; t <= T0 + durationMs; t += stepMs) {
    for (const e of f.eventsDue(t)) out.push(e);
  }
  return out;
}

const byKind = (evs: TelemetryEvent[], kind: string) => evs.filter((e) => e.kind === kind);

test("mulberry32 is deterministic and in [0, 1)", () => {
  const a = mulberry32(123);
  const b = mulberry32(123);
  for (let i = 0; i < 1000; i++) {
    const x = a();
    assert.equal(x, b());
    assert.ok(x >= 0 && x < 1);
  }
  assert.notEqual(mulberry32(1)(), mulberry32(2)());
});

test("same seed gives identical events; different seed differs", () => {
  const a = run({ robots: 50, seed: 7 }, 60_000);
  const b = run({ robots: 50, seed: 7 }, 60_000);
  assert.ok(a.length > 0);
  assert.deepEqual(a, b);
  const c = run({ robots: 50, seed: 8 }, 60_000);
  assert.notDeepEqual(a, c);
});

test("events do not depend on polling granularity", () => {
  const fine = run({ robots: 30, seed: 3 }, 120_000, 100);
  const coarse = run({ robots: 30, seed: 3 }, 120_000, 7_000);
  const key = (e: TelemetryEvent) => e.id;
  const sort = (evs: TelemetryEvent[]) => [...evs].sort((x, y) => x.ts - y.ts || (key(x) < key(y) ? -1 : 1));
  // 120000 is a multiple of 100 but not of 7000: compare the common span.
  const end = T0 + 119_000;
  assert.deepEqual(sort(fine.filter((e) => e.ts <= end)), sort(coarse.filter((e) => e.ts <= end)));
});

test("event ids are unique over several minutes and follow robotId-seq", () => {
  const evs = run({ robots: 200, seed: 11 }, 5 * 60_000);
  const ids = new Set<string>();
  for (const e of evs) {
    assert.ok(!ids.has(e.id), `duplicate id ${e.id}`);
    ids.add(e.id);
    assert.match(e.id, /^robot-\d{4}-\d+$/);
    assert.ok(e.id.startsWith(`${e.source}-`));
  }
  assert.equal(ids.size, evs.length);
});

test("ts lies within (previous call, now] and results are sorted", () => {
  const f = new Fleet({ robots: 100, seed: 5 });
  assert.deepEqual(f.eventsDue(T0), [], "first call only anchors the clock");
  let prev = T0;
  let distinct = new Set<number>();
  for (let i = 1; i <= 40; i++) {
    const now = T0 + i * 250;
    const evs = f.eventsDue(now);
    for (let j = 0; j < evs.length; j++) {
      const e = evs[j]!;
      assert.ok(e.ts > prev && e.ts <= now, `ts ${e.ts} outside (${prev}, ${now}]`);
      if (j > 0) assert.ok(evs[j - 1]!.ts <= e.ts);
      distinct.add(e.ts);
    }
    prev = now;
  }
  assert.ok(distinct.size > 50, "event times should be spread, not all equal to now");
  assert.deepEqual(f.eventsDue(prev), [], "no time passed, no events");
  assert.deepEqual(f.eventsDue(prev - 1000), [], "clock going back yields nothing");
});

test("status rate ≈ robots × 60000 / intervalMs per minute", () => {
  for (const [robots, intervalMs] of [
    [1000, 3000],
    [300, 1000],
  ] as const) {
    const minutes = 3;
    const evs = run({ robots, intervalMs, seed: 2 }, minutes * 60_000);
    const perMinute = byKind(evs, "status").length / minutes;
    const expected = (robots * 60_000) / intervalMs;
    assert.ok(Math.abs(perMinute - expected) / expected < 0.1, `status/min ${perMinute} vs expected ${expected}`);
  }
});

test("all events carry the required tags and values", () => {
  const robots = 120;
  const evs = run({ robots, seed: 9 }, 5 * 60_000);
  const kinds = new Set(evs.map((e) => e.kind));
  assert.deepEqual([...kinds].sort(), ["error", "perf", "status"]);
  const robotTags = new Map<string, string>();
  for (const e of evs) {
    assert.match(e.source, /^robot-\d{4}$/);
    assert.ok(Number.isInteger(e.ts));
    for (const k of ["site", "line", "model"]) assert.equal(typeof e.tags[k], "string", `${e.kind} lacks tag ${k}`);
    assert.ok(DEFAULT_SITES.includes(e.tags.site!));
    assert.match(e.tags.line!, /^line-[123]$/);
    assert.ok(["AX-100", "AX-200", "BX-7"].includes(e.tags.model!));
    // Site, line and model are stable per robot.
    const stable = `${e.tags.site}/${e.tags.line}/${e.tags.model}`;
    assert.equal(robotTags.get(e.source) ?? stable, stable);
    robotTags.set(e.source, stable);
    for (const v of Object.values(e.values)) assert.ok(Number.isFinite(v));
    switch (e.kind) {
      case "status":
        assert.deepEqual(Object.keys(e.tags).sort(), ["line", "model", "site", "state"]);
        assert.ok(["working", "idle", "charging"].includes(e.tags.state!));
        assert.deepEqual(Object.keys(e.values).sort(), ["battery", "temperature"]);
        break;
      case "error":
        assert.deepEqual(Object.keys(e.tags).sort(), ["code", "line", "model", "site"]);
        assert.match(e.tags.code!, /^E\d{3}$/);
        assert.deepEqual(Object.keys(e.values), ["severity"]);
        break;
      case "perf":
        assert.deepEqual(Object.keys(e.tags).sort(), ["line", "model", "site"]);
        assert.deepEqual(Object.keys(e.values).sort(), ["cycle_time", "items"]);
        break;
      default:
        assert.fail(`unexpected kind ${e.kind}`);
    }
  }
  assert.equal(robotTags.size, robots, "every robot reports");
  // All sites and models are represented.
  assert.equal(new Set([...robotTags.values()].map((s) => s.split("/")[0])).size, DEFAULT_SITES.length);
  assert.equal(new Set([...robotTags.values()].map((s) => s.split("/")[2])).size, 3);
});

test("values stay within realistic ranges and evolve", () => {
  const evs = run({ robots: 200, seed: 4 }, 30 * 60_000, 1000);
  const states = new Set<string>();
  const perRobot = new Map<string, number[]>();
  for (const e of byKind(evs, "status")) {
    const { battery, temperature } = e.values as { battery: number; temperature: number };
    assert.ok(battery >= 0 && battery <= 100, `battery ${battery}`);
    assert.ok(temperature >= 15 && temperature <= 95, `temperature ${temperature}`);
    states.add(e.tags.state!);
    let b = perRobot.get(e.source);
    if (!b) perRobot.set(e.source, (b = []));
    b.push(battery);
  }
  assert.deepEqual([...states].sort(), ["charging", "idle", "working"]);
  // Battery changes slowly between consecutive ticks but does change over 30 minutes.
  let moved = 0;
  for (const b of perRobot.values()) {
    for (let i = 1; i < b.length; i++) assert.ok(Math.abs(b[i]! - b[i - 1]!) < 5, "battery jumps");
    if (Math.max(...b) - Math.min(...b) > 10) moved++;
  }
  assert.ok(moved > perRobot.size / 2);
  for (const e of byKind(evs, "error")) {
    assert.ok([1, 2, 3].includes(e.values.severity!));
  }
  const cycles = byKind(evs, "perf").map((e) => e.values.cycle_time!);
  assert.ok(cycles.length > 0);
  for (const e of byKind(evs, "perf")) {
    assert.ok(Number.isInteger(e.values.cycle_time) && e.values.cycle_time! > 100 && e.values.cycle_time! < 10_000);
    assert.ok(Number.isInteger(e.values.items) && e.values.items! >= 0 && e.values.items! < 50);
  }
  // Cycle time is model specific.
  const mean = (m: string) => {
    const xs = byKind(evs, "perf").filter((e) => e.tags.model === m).map((e) => e.values.cycle_time!);
    return xs.reduce((a, b) => a + b, 0) / xs.length;
  };
  assert.ok(mean("AX-200") < mean("AX-100") && mean("AX-100") < mean("BX-7"));
});

test("error events appear at roughly the configured rate", () => {
  for (const errorRate of [0.03, 0.1]) {
    const evs = run({ robots: 500, seed: 13, errorRate }, 10 * 60_000, 1000);
    const status = byKind(evs, "status");
    const errors = byKind(evs, "error");
    const rate = errors.length / status.length;
    assert.ok(Math.abs(rate - errorRate) / errorRate < 0.2, `error rate ${rate} vs ${errorRate}`);
    // Each error shares its robot and time with a status tick.
    const ticks = new Set(status.map((e) => `${e.source}@${e.ts}`));
    for (const e of errors) assert.ok(ticks.has(`${e.source}@${e.ts}`));
  }
  assert.equal(byKind(run({ robots: 100, seed: 1, errorRate: 0 }, 60_000), "error").length, 0);

  // Some models are more error-prone than others.
  const evs = run({ robots: 1000, seed: 21 }, 10 * 60_000, 1000);
  const rateOf = (model: string) =>
    byKind(evs, "error").filter((e) => e.tags.model === model).length /
    byKind(evs, "status").filter((e) => e.tags.model === model).length;
  assert.ok(rateOf("AX-100") > 1.5 * rateOf("AX-200"), `AX-100 ${rateOf("AX-100")} vs AX-200 ${rateOf("AX-200")}`);
});

test("a long stall is capped by maxCatchUpMs", () => {
  const f = new Fleet({ robots: 100, seed: 1, startMs: T0, maxCatchUpMs: 10_000 });
  const evs = f.eventsDue(T0 + 3_600_000);
  for (const e of evs) assert.ok(e.ts > T0 + 3_600_000 - 10_000);
  const statuses = byKind(evs, "status").length;
  assert.ok(statuses > 250 && statuses < 450, `statuses ${statuses}`);
});

import assert from "node:assert/strict";
import { test } from "node:test";
import type { TelemetryEvent } from "../actors/event.js";
import { Router } from "../actors/router.js";
import { parseRules } from "../actors/rules.js";
import { storedWindowTimes, windowActorKind, type WindowActorEnv, type WindowMessage } from "../actors/window-actor.js";
import type { WindowResult } from "../actors/window-result.js";
import { WindowShard } from "../actors/window-shard.js";
import { ActorSystem } from "../runtime/actor-system.js";
import { MemoryStateStore } from "../runtime/state-store.js";
import { prng } from "./expected.js";

const minute = 60_000;
const t0 = Date.UTC(2026, 10, 24, 10);

// Plain rules (rows of the table) beside a rich one (actors), with rollups and a sliding window:
// a row hands its final up to an actor, and every kind of window shares the shard's timers.
const rules = parseRules(`
metrics:
  - {name: plain, kind: k, value: v, groupBy: [device], aggregates: [count, sum, min, max, avg, rate], window: 1m, rollups: [1h], lateness: 5s, horizon: 10m}
  - {name: sliding, kind: k, groupBy: [site, device], aggregates: [count], windows: ["2m/1m"], lateness: 5s, horizon: 10m}
  - {name: bysite, kind: k, value: v, groupBy: [site], aggregates: [count, max], window: 1m, lateness: 5s, horizon: 10m}
  - {name: rich, kind: k, value: v, groupBy: [site], aggregates: [count, p99], window: 1m, lateness: 5s, horizon: 10m}
`);
const byName = new Map(rules.map((r) => [r.name, r]));

/** One shard fed router batches and watermarks, restartable from its store; windows as actors only, or plain ones as rows. */
function pipeline(store: MemoryStateStore, table: boolean) {
  const emitted: Emitted[] = [];
  // A row's final comes as its JSON text (`emitEncoded`): kept as it came, compared as text with the actors' results stringified.
  const env: WindowActorEnv = {
    rule: (m) => byName.get(m),
    emit: (r) => emitted.push(r),
    emitEncoded: (r) => emitted.push({ ...(JSON.parse(r.json) as WindowResult), [encodedAs]: r.json }),
    emitIntervalMs: 0,
    now: () => 0,
  };
  const router = new Router(rules, 1);
  let system!: ActorSystem<WindowMessage>;
  let shard!: WindowShard;
  let batch = 0;
  let mostRows = 0;
  const start = async () => {
    system = new ActorSystem<WindowMessage>(windowActorKind(env), store, { idleMs: 0 });
    shard = new WindowShard(0, system, (m) => byName.get(m)!, table ? { table: env } : {});
    const meta = await store.get("meta");
    if (meta) shard.restore(JSON.parse(Buffer.from(meta).toString()));
    for await (const [key, bytes] of system.storedStates()) {
      const { end, open } = storedWindowTimes(bytes);
      shard.restoreWindow(key, end, open, bytes);
    }
  };
  return {
    emitted,
    start,
    get mostRows() {
      return mostRows;
    },
    async feed(events: TelemetryEvent[], watermark: number) {
      const partials = router.route(events).byShard.get(0);
      if (partials) shard.applyBatch("0", ++batch, partials);
      mostRows = Math.max(mostRows, shard.activeWindows - system.activeCount);
      await shard.mark(0, { watermark, idle: false });
      await system.idle();
    },
    async checkpoint() {
      await system.idle();
      await system.checkpoint([["meta", Buffer.from(JSON.stringify(shard.save()))]]);
    },
    /** Everything since the last checkpoint is lost, as in a kill -9; the router batch counter goes on (the mailbox would replay). */
    async crash() {
      system.reset();
      await start();
    },
  };
}

/** The JSON text a result came as, if it came encoded (a row's final). */
const encodedAs = Symbol("encoded as");
type Emitted = WindowResult & { [encodedAs]?: string };

function sorted(results: Emitted[]): string[] {
  return results.map((r) => r[encodedAs] ?? JSON.stringify(r)).sort();
}

/**
 * A rollup window's last result. Its hand-overs arrive in another order with rows than with
 * actors only (a shard fires its rows after the actors due at the same watermark, and a row
 * fires without a message), so its sums may differ in the last bits and its provisional results
 * in between: counts and revisions may not. (Each pipeline alone is deterministic: a replay
 * gives the same order, see `ActorSystem`.)
 */
function lastOfRollups(results: WindowResult[]): Map<string, WindowResult> {
  const last = new Map<string, WindowResult>();
  for (const r of results) {
    if (r.window !== "1h") continue;
    const held = last.get(r.key);
    if (!held || r.revision > held.revision || (r.revision === held.revision && r.eventCount > held.eventCount)) last.set(r.key, r);
  }
  return last;
}

test("plain windows as rows of a table emit exactly what window actors emit: provisional, final, corrections, rollups, across checkpoints and crashes", async () => {
  for (const seed of [1, 2, 3]) {
    const random = prng(seed);
    const actors = pipeline(new MemoryStateStore(), false);
    const rows = pipeline(new MemoryStateStore(), true);
    await actors.start();
    await rows.start();
    let maxTs = t0;
    let id = 0;
    for (let step = 0; step < 120; step++) {
      const events: TelemetryEvent[] = [];
      for (let i = Math.floor(random() * 40); i > 0; i--) {
        // Mostly near the front; some late (behind the watermark, within lateness or after the final), a few very late.
        const r = random();
        const lag = r < 0.7 ? random() * 3_000 : r < 0.95 ? random() * 2 * minute : random() * 20 * minute;
        const ts = Math.floor(maxTs - lag);
        // A few with characters that JSON escapes: their dims are read back from their keys all the same.
        const device = random() < 0.03 ? 'd"q\\b' : `d${Math.floor(random() * 30)}`;
        // Some without a site: their dims do not follow from their keys (a row keeps them then).
        const tags: Record<string, string> = random() < 0.05 ? { device } : { device, site: `s${Math.floor(random() * 3)}` };
        events.push({ id: `e${id++}`, ts, source: device, kind: "k", tags, values: { v: Math.round(random() * 1000) / 10 } });
      }
      maxTs += Math.floor(random() * 4_000);
      const watermark = maxTs - 2_000;
      await actors.feed(events, watermark);
      await rows.feed(events, watermark);
      if (random() < 0.2) {
        await actors.checkpoint();
        await rows.checkpoint();
      }
      if (random() < 0.05) {
        await actors.crash();
        await rows.crash();
      }
    }
    assert.ok(rows.mostRows > 20, `the table held rows (most at once: ${rows.mostRows})`);
    assert.ok(actors.emitted.some((r) => r.status === "corrected") && actors.emitted.some((r) => r.window === "1h" && r.status === "final"), "corrections and rollups were exercised");
    assert.ok(rows.emitted.some((r) => r[encodedAs] !== undefined) && !actors.emitted.some((r) => r[encodedAs] !== undefined), "rows' finals came encoded, actors' not");
    const base = (results: Emitted[]) => sorted(results.filter((r) => r.window !== "1h"));
    assert.deepEqual(base(rows.emitted), base(actors.emitted), `seed ${seed}: every result of the base windows`);
    const [fromRows, fromActors] = [lastOfRollups(rows.emitted), lastOfRollups(actors.emitted)];
    assert.deepEqual([...fromRows.keys()].sort(), [...fromActors.keys()].sort());
    for (const [key, a] of fromActors) {
      const r = fromRows.get(key)!;
      assert.deepEqual([r.status, r.revision, r.eventCount, r.lateCount, r.values.count, r.values.min, r.values.max], [a.status, a.revision, a.eventCount, a.lateCount, a.values.count, a.values.min, a.values.max], key);
      assert.ok(Math.abs((r.values.sum as number) - (a.values.sum as number)) < 1e-6, `${key}: sum ${r.values.sum} vs ${a.values.sum}`);
    }
  }
});

test("a row throttles its provisional results to the emit interval, and a final goes out at once", async () => {
  const emitted: WindowResult[] = [];
  let now = 0;
  const env: WindowActorEnv = { rule: (m) => byName.get(m), emit: (r) => emitted.push(r), emitIntervalMs: 40, now: () => now };
  const system = new ActorSystem<WindowMessage>(windowActorKind(env), new MemoryStateStore(), { idleMs: 0 });
  const shard = new WindowShard(0, system, (m) => byName.get(m)!, { table: env });
  const router = new Router(rules, 1);
  const event = (n: number): TelemetryEvent => ({ id: `e${n}`, ts: t0 + n, source: "d1", kind: "k", tags: { device: "d1" }, values: { v: n } });
  const plain = () => emitted.filter((r) => r.metric === "plain" && r.window === "1m");
  let batch = 0;
  const feed = (n: number) => shard.applyBatch("0", ++batch, router.route([event(n)]).byShard.get(0)!);
  feed(1);
  assert.equal(plain().length, 1, "the first change goes out at once");
  now = 10;
  feed(2);
  feed(3);
  assert.equal(plain().length, 1, "later changes wait for the interval");
  now = 40;
  const waited = Date.now();
  while (plain().length < 2 && Date.now() - waited < 5_000) await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(plain().map((r) => r.eventCount), [1, 3], "one provisional result with both changes, once the interval passed");
  // Queries read a row's current state (it is newer than its last provisional result).
  assert.deepEqual(shard.openRows("plain", "1m", t0, t0 + minute, { device: "d1" }).map((r) => [r.status, r.eventCount, r.values.sum]), [["provisional", 3, 6]]);
  assert.deepEqual(shard.openRows("plain", "1m", t0, t0 + minute, { device: "d2" }), []);
  assert.deepEqual(shard.openRows("plain", "1m", t0 + minute, t0 + 2 * minute, {}), []);
  const rowsBefore = shard.activeWindows - system.activeCount;
  await shard.mark(0, { watermark: t0 + minute + 5_000, idle: false });
  assert.deepEqual(plain().map((r) => [r.status, r.eventCount]), [["provisional", 1], ["provisional", 3], ["final", 3]]);
  // The plain and by-site 1m windows and the sliding one ending with them; the sliding window [t0, t0 + 2m) stays open.
  assert.equal(rowsBefore - (shard.activeWindows - system.activeCount), 3, "a final window leaves the table");
  assert.deepEqual(shard.openRows("plain", "1m", t0, t0 + minute, {}), [], "and its queries");
  system.reset();
});

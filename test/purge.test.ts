import assert from "node:assert/strict";
import { test } from "node:test";
import { actorKey, saltedKey, shardOfKey } from "../actors/actor-keys.js";
import type { TelemetryEvent } from "../actors/event.js";
import { Router } from "../actors/router.js";
import { parseRules, type MetricRule } from "../actors/rules.js";
import type { WindowResult } from "../actors/window-result.js";
import { purgeMarginMs } from "../actors/window-shard.js";
import { storedWindowTimes } from "../actors/window-snapshot.js";
import { RocksStateStore } from "../runtime/state-store.js";
import { prng } from "./expected.js";
import { tempDir } from "./harness.js";
import { MemoryShards } from "./memory-shards.js";

const minute = 60_000;
const hour = 60 * minute;
const t0 = Date.UTC(2026, 10, 24, 10);

/** A real RocksDB whose point reads are counted (what activating a passivated actor costs). */
async function countedStore(path: string): Promise<RocksStateStore & { reads: number }> {
  const store = await RocksStateStore.open(path);
  const counted = Object.assign(Object.create(store) as RocksStateStore, {
    reads: 0,
    get: (key: string) => {
      counted.reads++;
      return store.get(key);
    },
    getMany: (keys: readonly string[]) => {
      counted.reads += keys.length;
      return store.getMany(keys);
    },
    close: () => store.close(),
  });
  return counted;
}

/** Every window state stored by every shard, by key (shard prefix included). */
async function storedWindows(store: RocksStateStore): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for await (const [key, value] of store.scan("shard/", "shard/\uffff")) if (key.includes("/actor/")) out.set(key, Buffer.from(value));
  return out;
}

/** Shards of a small cluster over `store`, fed router batches and watermarks as a node feeds them. */
function cluster(store: RocksStateStore, rules: MetricRule[], options: { shards?: number; idleMs?: number; purgeByMessage?: boolean } = {}) {
  const byName = new Map(rules.map((r) => [r.name, r]));
  const emitted: WindowResult[] = [];
  const count = options.shards ?? 4;
  const shards = new MemoryShards(store, (m) => byName.get(m), async (r) => void emitted.push(r), {
    shards: count,
    emitIntervalMs: 0,
    actorIdleMs: options.idleMs ?? 60_000,
    purgeByMessage: options.purgeByMessage,
  });
  const router = new Router(rules, count);
  let seq = 0;
  return {
    shards,
    emitted,
    router,
    /** One router batch from `partition`, not waited for (as a hosted shard goes on with its next mailbox message). */
    feed(events: TelemetryEvent[], partition = 0) {
      seq++;
      for (const [id, partials] of router.route(events, -Infinity, events.map(() => 1), partition).byShard) shards.shards.get(id)!.applyBatch(`${partition}`, seq, partials);
    },
    async mark(watermark: number, only?: (shard: number) => boolean) {
      for (const [id, shard] of shards.shards) if (!only || only(id)) await shard.mark(0, { watermark, idle: false });
    },
    get active() {
      return [...shards.shards.values()].reduce((n, s) => n + s.activeWindows, 0);
    },
  };
}

const rules = parseRules(`
metrics:
  - {name: devices, kind: k, groupBy: [device], aggregates: [count], window: 1m, lateness: 5s, horizon: 10m}
  - {name: rich, kind: k, value: v, groupBy: [device], aggregates: [count, p99], window: 1m, lateness: 5s, horizon: 10m}
`);
const devices = 40;
const oneEach = (ts: number, prefix: string): TelemetryEvent[] =>
  Array.from({ length: devices }, (_, i) => ({ id: `${prefix}${i}`, ts, source: `d${i}`, kind: "k", tags: { device: `d${i}` }, values: { v: i } }));
/** Past the minute's close: every window final, passivated (rows handed to actors as passivated states). */
const closed = t0 + minute + 5_000;
/** Past its purge (horizon + margin after its close). */
const purged = closed + 10 * minute + purgeMarginMs + 1;

/** A cluster over `store` whose one minute (an event per device) has closed: every window final, passivated and checkpointed. */
async function closedMinute(store: RocksStateStore, options: { purgeByMessage?: boolean } = {}) {
  const c = cluster(store, rules, options);
  await c.shards.recover();
  c.feed(oneEach(t0 + 1_000, "a"));
  await c.mark(closed);
  await c.shards.checkpoint();
  return c;
}

test("a purge deletes a passivated window's stored state without reading it: gone after the checkpoint, after a restart, and purged again after a crash before the checkpoint", async () => {
  for (const crash of [false, true]) {
    const dir = tempDir();
    const store = await countedStore(dir.path);
    try {
      let c = await closedMinute(store);
      assert.equal(c.active, 0, "every window final and passivated");
      assert.equal((await storedWindows(store)).size, 2 * devices, "a devices minute (a row until final) and a rich minute (an actor) per device");
      const finals = c.emitted.length;

      store.reads = 0;
      await c.mark(purged);
      await c.shards.actors.idle();
      assert.equal(store.reads, 0, "no window was read to be purged");
      assert.equal(c.active, 0, "nor activated");
      if (crash) {
        // Killed before the checkpoint: the store still has every window, and a restart rebuilds
        // their purge timers; the mailbox replays the same watermark, which purges them again.
        c.shards.reset();
        c = cluster(store, rules);
        await c.shards.recover();
        assert.equal((await storedWindows(store)).size, 2 * devices);
        store.reads = 0;
        await c.mark(purged);
        await c.shards.actors.idle();
        assert.equal(store.reads, 0, "after the crash, purged unread too");
      }
      await c.shards.checkpoint();
      assert.deepEqual([...(await storedWindows(store)).keys()], [], "every window's state deleted by the checkpoint");
      assert.equal(c.emitted.length, crash ? 0 : finals, "a purge emits nothing");
      c.shards.reset();

      const after = cluster(store, rules);
      await after.shards.recover();
      assert.equal(after.shards.shards.get(0)!.pendingTimers, 0);
      assert.deepEqual([...(await storedWindows(store)).keys()], [], "nothing comes back after a restart");
      after.shards.reset();
    } finally {
      await store.close();
      dir.remove();
    }
  }
});

test("a purge racing late partials: an active window is purged through its actor after its correction, one purged first starts anew; both as purging through the actors does", async () => {
  const run = async (purgeByMessage: boolean) => {
    const dir = tempDir();
    const store = await countedStore(dir.path);
    try {
      const c = await closedMinute(store, { purgeByMessage });
      store.reads = 0;
      const from = c.emitted.length;
      // d0's late event arrives in the batch just before the purging watermark (its actor reads
      // its state meanwhile, so it is active when the purge comes); d1's just after.
      c.feed([{ id: "late0", ts: t0 + 2_000, source: "d0", kind: "k", tags: { device: "d0" }, values: { v: 7 } }]);
      await c.mark(purged);
      c.feed([{ id: "late1", ts: t0 + 3_000, source: "d1", kind: "k", tags: { device: "d1" }, values: { v: 9 } }]);
      await c.shards.checkpoint();
      const stored = await storedWindows(store);
      const reads = store.reads;
      c.shards.reset();
      return { emitted: c.emitted.map((r) => JSON.stringify(r)), stored, reads, late: c.emitted.slice(from) };
    } finally {
      await store.close();
      dir.remove();
    }
  };
  const unread = await run(false);
  const before = await run(true);
  assert.deepEqual(unread.emitted.sort(), before.emitted.sort(), "the same results");
  assert.deepEqual(unread.stored, before.stored, "the same states stored");
  // d0: a correction (revision 2, both events), then purged; d1: purged, then a window of its one late event.
  const of = (device: string) => unread.late.filter((r) => r.dims.device === device).map((r) => [r.metric, r.status, r.revision, r.eventCount, r.lateCount]).sort();
  assert.deepEqual(of("d0"), [["devices", "corrected", 2, 2, 1], ["rich", "corrected", 2, 2, 1]]);
  assert.deepEqual(of("d1"), [["devices", "final", 1, 1, 1], ["rich", "final", 1, 1, 1]]);
  assert.equal(unread.late.length, 4);
  assert.deepEqual([...unread.stored.keys()].map((k) => k.slice(k.indexOf("/actor/") + 7)).sort(), [
    actorKey("devices", "1m", t0, '["d1"]'),
    actorKey("rich", "1m", t0, '["d1"]'),
  ], "only d1's new windows are left");
  // d0's two windows are read (active when the purge comes); every other purge reads nothing.
  assert.equal(unread.reads, 2);
  assert.ok(before.reads >= 2 * devices, `purging through the actors read every window (${before.reads} reads)`);
});

test("a hot series' window still waiting for a sub-actor at its purge keeps its state (and so does its hour), and goes final with every event once the sub-actor hands over, across a restart too", async () => {
  const [fleet] = parseRules(`{metrics: [{name: fleet, kind: k, value: v, aggregates: [count, sum], window: 1m, rollups: [1h], lateness: 10s, horizon: 10m}]}`);
  // Past the hour's close (and the minute's); then past both purges (a restart registers them a horizon after the restored watermark).
  const due = t0 + hour + 15_000;
  const gone = due + 10 * minute + purgeMarginMs + 1;
  const run = async (restart: boolean, purgeByMessage: boolean) => {
    const dir = tempDir();
    const store = await countedStore(dir.path);
    try {
      const open = () => cluster(store, [fleet!], { shards: 8, idleMs: 20, purgeByMessage });
      let c = open();
      await c.shards.recover();
      c.router.setHotSeries([{ metric: "fleet", dimsId: "[]", salts: 3, from: 0, reason: "configured" }]);
      const minuteKey = actorKey("fleet", "1m", t0, "[]");
      const hourKey = actorKey("fleet", "1h", t0, "[]");
      const home = shardOfKey(minuteKey, 8);
      // Partition p feeds sub-actor p % 3: one on another shard than the window's is the straggler.
      const subShard = (p: number) => shardOfKey(saltedKey(minuteKey, p % 3), 8);
      const straggler = [0, 1, 2].find((p) => subShard(p) !== home)!;
      assert.notEqual(straggler, undefined);
      let sum = 0;
      for (let p = 0; p < 3; p++) {
        const events = Array.from({ length: 10 }, (_, i) => ({ id: `p${p}e${i}`, ts: t0 + 1_000 + i, source: "s", kind: "k", tags: {}, values: { v: p * 10 + i } }));
        for (const e of events) sum += e.values.v;
        c.feed(events, p);
      }
      await c.shards.actors.idle();
      const others = (id: number) => id !== subShard(straggler);
      // Every shard but the straggler's passes the hour's close, the window's first (so its
      // sub-actors' last shares come after its own fire, as through a mailbox): the minute and the hour wait.
      await c.mark(due, (id) => id === home);
      await c.shards.actors.idle();
      await c.mark(due, others);
      await c.shards.actors.idle();
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(c.shards.shards.get(home)!.activeWindows, 0, "both passivated while they wait");
      assert.equal(c.emitted.filter((r) => r.status === "final").length, 0);
      if (restart) {
        await c.shards.checkpoint();
        c.shards.reset();
        c = open();
        await c.shards.recover();
      }
      await c.mark(gone, others);
      await c.shards.actors.idle();
      await c.shards.checkpoint();
      const stored = await storedWindows(store);
      for (const key of [minuteKey, hourKey]) {
        const bytes = stored.get(`shard/${home}/actor/${key}`);
        assert.ok(bytes && storedWindowTimes(bytes).open, `${key}: kept, open`);
      }
      // The straggler passes its close at last: it hands its share over, the minute and the hour go final.
      await c.mark(due, (id) => !others(id));
      await c.shards.actors.idle();
      const finals = c.emitted.filter((r) => r.status !== "provisional");
      assert.deepEqual(finals.map((r) => [r.window, r.status, r.eventCount, r.values.sum]), [["1m", "final", 30, sum], ["1h", "final", 30, sum]], `restart: ${restart}`);
      c.shards.reset();
      return finals;
    } finally {
      await store.close();
      dir.remove();
    }
  };
  for (const restart of [false, true]) {
    // (Its lateCount, 10 or 0, depends on whether a sub-actor on the window's own shard hands over before the window's fire: the same both ways.)
    assert.deepEqual(await run(restart, false), await run(restart, true), `restart: ${restart}: as purging through the actors`);
  }
});

/** A rollup window's last result (its hand-overs may arrive in another order when actors read their states: the values in between may differ). */
function lastOf(results: WindowResult[]): Map<string, string> {
  const last = new Map<string, WindowResult>();
  for (const r of results) {
    const held = last.get(r.key);
    if (!held || r.revision > held.revision || (r.revision === held.revision && r.eventCount >= held.eventCount)) last.set(r.key, r);
  }
  return new Map([...last].map(([k, r]) => [k, JSON.stringify({ ...r, watermark: 0 })]));
}

test("purging unread emits and stores exactly what purging through the actors does: random late and very late events racing the purges, checkpoints and crashes", async (t) => {
  const mixed = parseRules(`
metrics:
  - {name: plain, kind: k, value: v, groupBy: [device], aggregates: [count, sum, min, max], window: 1m, rollups: [1h], lateness: 5s, horizon: 2m}
  - {name: sliding, kind: k, groupBy: [device], aggregates: [count], windows: ["2m/1m"], lateness: 5s, horizon: 2m}
  - {name: rich, kind: k, value: v, groupBy: [device], aggregates: [count, p99], window: 1m, lateness: 5s, horizon: 2m}
`);
  for (const seed of [1, 2]) {
    const run = async (purgeByMessage: boolean) => {
      const dir = tempDir();
      const store = await countedStore(dir.path);
      try {
        const random = prng(seed);
        let c = cluster(store, mixed, { purgeByMessage });
        await c.shards.recover();
        const results: WindowResult[] = [];
        let maxTs = t0;
        let id = 0;
        for (let step = 0; step < 300; step++) {
          const events: TelemetryEvent[] = [];
          for (let i = Math.floor(random() * 30); i > 0; i--) {
            // Mostly recent; some late; some past their window's purge (~13 min after its close).
            const r = random();
            const lag = r < 0.7 ? random() * 3_000 : r < 0.9 ? random() * 3 * minute : random() * 40 * minute;
            const device = `d${Math.floor(random() * 8)}`;
            events.push({ id: `e${id++}`, ts: Math.floor(maxTs - lag), source: device, kind: "k", tags: { device }, values: { v: Math.floor(random() * 100) } });
          }
          maxTs += Math.floor(random() * 30_000);
          c.feed(events);
          // Not waited for: the purges of this watermark race the batch's partials.
          await c.mark(maxTs - 2_000);
          if (random() < 0.5) await c.shards.actors.idle();
          if (random() < 0.15) await c.shards.checkpoint();
          if (random() < 0.01) {
            await c.shards.actors.idle();
            results.push(...c.emitted);
            c.shards.reset();
            c = cluster(store, mixed, { purgeByMessage });
            await c.shards.recover();
          }
        }
        await c.shards.checkpoint();
        results.push(...c.emitted);
        c.shards.reset();
        return { results, stored: await storedWindows(store), reads: store.reads };
      } finally {
        await store.close();
        dir.remove();
      }
    };
    const unread = await run(false);
    const before = await run(true);
    const base = (rs: WindowResult[]) => rs.filter((r) => r.window !== "1h").map((r) => JSON.stringify(r)).sort();
    assert.ok(unread.results.some((r) => r.status === "corrected") && unread.results.some((r) => r.window === "1h" && r.status === "final"));
    assert.deepEqual(base(unread.results), base(before.results), `seed ${seed}: every result of the base windows`);
    assert.deepEqual(lastOf(unread.results.filter((r) => r.window === "1h")), lastOf(before.results.filter((r) => r.window === "1h")), `seed ${seed}: the rollups' last results`);
    assert.deepEqual([...unread.stored.keys()].sort(), [...before.stored.keys()].sort(), `seed ${seed}: the same windows stored`);
    assert.ok(unread.reads < before.reads, `seed ${seed}: fewer reads (${unread.reads} against ${before.reads})`);
    t.diagnostic(`seed ${seed}: ${unread.reads} reads against ${before.reads} purging through the actors`);
  }
});

test("a restart keeps a closed window's purge time: purged a horizon after its close, not a horizon after the restart", async () => {
  const dir = tempDir();
  const store = await countedStore(dir.path);
  try {
    let c = await closedMinute(store);
    // The node restarts shortly before the windows' purge (a checkpoint at that watermark first).
    await c.mark(purged - 2 * minute);
    await c.shards.checkpoint();
    assert.equal((await storedWindows(store)).size, 2 * devices);
    c.shards.reset();

    c = cluster(store, rules);
    await c.shards.recover();
    await c.mark(purged);
    await c.shards.actors.idle();
    await c.shards.checkpoint();
    assert.deepEqual([...(await storedWindows(store)).keys()], [], "purged when they would have been without the restart");
    c.shards.reset();
  } finally {
    await store.close();
    dir.remove();
  }
});

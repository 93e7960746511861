import assert from "node:assert/strict";
import { test } from "node:test";
import { Router } from "../actors/router.js";
import { parseRules } from "../actors/rules.js";
import { windowActorKind, type WindowMessage } from "../actors/window-actor.js";
import type { WindowResult } from "../actors/window-result.js";
import { WindowShard } from "../actors/window-shard.js";
import { decodeWindowSnapshot, encodeWindowSnapshot, storedWindowMayWait, storedWindowTimes, storedWindowWatermark, type StoredWindow } from "../actors/window-snapshot.js";
import { ActorSystem } from "../runtime/actor-system.js";
import { MemoryStateStore } from "../runtime/state-store.js";

const t0 = Date.UTC(2026, 10, 24, 10, 0, 0);
const minute = 60_000;

const window: StoredWindow = {
  metric: "m",
  window: "1m",
  start: t0,
  end: t0 + minute,
  dims: { site: "Zürich \t \"north\"" },
  status: "corrected",
  revision: 3,
  lateCount: 2,
  watermark: t0 + minute + 1_234.5,
  agg: { count: 7, sum: -1.25, min: -Infinity, max: 1e300 },
  states: { sketch: "AAEC" },
  subs: { expect: [1, 2], seen: { "1@5": 2 }, done: [1] },
  holds: ["k"],
};

test("a window snapshot round-trips every field, infinities and unicode included, and is far smaller than JSON", () => {
  const bytes = encodeWindowSnapshot(window, window.start, window.end, window.states);
  assert.deepEqual(decodeWindowSnapshot(bytes), window);
  assert.deepEqual(storedWindowTimes(bytes), { end: t0 + minute, open: false });
  assert.equal(storedWindowWatermark(bytes), window.watermark, "where a restored window's purge is counted from");
  const open = encodeWindowSnapshot({ ...window, status: "open", subs: undefined, holds: undefined }, t0, t0 + minute);
  assert.equal(storedWindowTimes(open).open, true);
  assert.equal("states" in decodeWindowSnapshot(open), false, "no states: none stored");
  // Only a window with sub-actors or holds may wait past its time (its purge then goes through its actor).
  assert.deepEqual([storedWindowMayWait(bytes), storedWindowMayWait(open)], [true, false]);
  assert.equal(storedWindowMayWait(encodeWindowSnapshot({ ...window, subs: undefined }, t0, t0 + minute)), true, "holds alone");
  assert.equal(storedWindowMayWait(encodeWindowSnapshot({ ...window, subs: undefined, holds: undefined, dims: { site: '"holds": "subs":' } }, t0, t0 + minute)), false, "a dims value spelled so (JSON escapes its quotes)");
  const count: StoredWindow = { metric: "devices", window: "1m", start: t0, end: t0 + minute, dims: { device: "dev-123456" }, status: "open", revision: 0, lateCount: 0, watermark: t0, agg: { count: 3, sum: 0, min: Infinity, max: -Infinity } };
  assert.ok(encodeWindowSnapshot(count, t0, t0 + minute).length < 0.7 * JSON.stringify(count).length, "a count window's snapshot is smaller than its JSON");
});

test("snapshots written as JSON before the binary format still read, and a malformed one fails clearly", () => {
  const legacy = Buffer.from(JSON.stringify({ ...window, agg: { count: 0, sum: 0 } }));
  const read = decodeWindowSnapshot(legacy);
  assert.deepEqual(read.agg, { count: 0, sum: 0, min: Infinity, max: -Infinity });
  assert.equal(read.dims.site, window.dims.site);
  assert.deepEqual(storedWindowTimes(legacy), { end: t0 + minute, open: false });
  assert.equal(storedWindowMayWait(legacy), true);
  assert.equal(storedWindowWatermark(legacy), window.watermark);
  assert.throws(() => decodeWindowSnapshot(Buffer.from([9, 0, 1])), /not a window snapshot/);
  assert.throws(() => storedWindowTimes(Buffer.from([1, 0])), /not a window snapshot/);
});

test("a window restored from its snapshot goes on exactly: percentiles, distinct and top-K states survive", async () => {
  const rules = parseRules("metrics: [{name: m, kind: k, groupBy: [site], window: 1m, lateness: 0s, value: value, aggregates: [count, avg, min, max, p50, p99, 'distinct:user', 'top3:code']}]");
  const router = new Router(rules, 1);
  const events = Array.from({ length: 300 }, (_, i) => ({
    id: `e${i}`,
    ts: t0 + (i % 50) * 1_000,
    source: "s",
    kind: "k",
    tags: { site: `site-${i % 3}`, user: `u${(i * 7) % 41}`, code: `c${i % 5 === 0 ? 1 : i % 7}` },
    values: { value: ((i * 37) % 101) - 20.5 },
  }));
  const run = async (restartAfter?: number) => {
    const store = new MemoryStateStore();
    const emitted: WindowResult[] = [];
    const start = () => {
      const system = new ActorSystem<WindowMessage>(windowActorKind({ rule: () => rules[0], emit: (r) => emitted.push(r), emitIntervalMs: 0, now: () => 0 }), store);
      return { system, shard: new WindowShard(0, system, () => ({ latenessMs: 0, horizonMs: minute })) };
    };
    let { system, shard } = start();
    for (let i = 0; i < events.length; i += 50) {
      shard.applyBatch("0", i + 50, router.route(events.slice(i, i + 50)).byShard.get(0)!);
      if (i + 50 === restartAfter) {
        await system.checkpoint();
        system.reset();
        ({ system, shard } = start());
        shard.restore({ watermark: null, applied: [["0", i + 50]], marks: [] });
        for await (const [key, bytes] of system.storedStates()) {
          const { end, open } = storedWindowTimes(bytes);
          shard.restoreWindow(key, end, open);
        }
      }
    }
    await shard.mark(0, { watermark: t0 + minute, idle: false });
    await system.idle();
    return emitted.filter((r) => r.status === "final").sort((a, b) => a.key.localeCompare(b.key));
  };
  const straight = await run();
  const restarted = await run(150);
  assert.equal(straight.length, 3);
  assert.deepEqual(
    restarted.map((r) => [r.dims, r.eventCount, r.values]),
    straight.map((r) => [r.dims, r.eventCount, r.values]),
  );
});

import assert from "node:assert/strict";
import { test } from "node:test";
import { connect } from "@nats-io/transport-node";
import type { TelemetryEvent } from "../actors/event.js";
import { Router } from "../actors/router.js";
import { parseRules, type MetricRule } from "../actors/rules.js";
import type { WindowResult } from "../actors/window-result.js";
import { seriesQuota } from "../actors/window-shard.js";
import { auditRule, foldedAudit } from "../node/audit.js";
import { MemoryShards } from "./memory-shards.js";
import { MemoryStateStore } from "../runtime/state-store.js";
import { prng } from "./expected.js";
import { eventually, startTestNats, startTestNode } from "./harness.js";

const minute = 60_000;
const hour = 60 * minute;
const t0 = Date.UTC(2026, 10, 24, 10, 0, 0);

const [limited] = parseRules(
  "metrics: [{name: dev, kind: k, value: v, groupBy: [device, site], aggregates: [count, sum], window: 1m, rollups: [1h], maxSeries: 5, lateness: 0s}]",
);
const ruleOf = (metric: string): MetricRule | undefined => (metric === "dev" ? limited : metric === auditRule.name ? auditRule : undefined);

function events(seed: number, n: number, devices: number, prefix: string): TelemetryEvent[] {
  const random = prng(seed);
  return Array.from({ length: n }, (_, i) => ({
    id: `${prefix}${i}`,
    ts: t0 + Math.floor(random() * 3 * minute),
    source: "s",
    kind: "k",
    tags: { device: `d${Math.floor(random() * devices)}`, site: random() < 0.5 ? "berlin" : "osaka" },
    values: { v: Math.floor(random() * 100) },
  }));
}

/** A shard host over an in-memory store, fed router batches directly (no NATS). */
async function host(store: MemoryStateStore, shards: number, emitted: WindowResult[]) {
  const h = new MemoryShards(store, ruleOf, async (r) => void emitted.push(r), { shards, emitIntervalMs: 0, actorIdleMs: 60_000 });
  await h.recover();
  return h;
}

let batchSeq = 0;
function feed(h: MemoryShards, router: Router, list: TelemetryEvent[]) {
  batchSeq++;
  for (const [shard, partials] of router.route(list).byShard) h.shards.get(shard)!.applyBatch("0", batchSeq, partials);
}

async function finish(h: MemoryShards) {
  for (const shard of h.shards.values()) await shard.mark(0, { watermark: t0 + 2 * hour, idle: false });
  await h.actors.idle();
}

/** The latest result per window and series. */
function latest(emitted: WindowResult[], metric: string): Map<string, WindowResult> {
  const out = new Map<string, WindowResult>();
  for (const r of emitted) if (r.metric === metric && r.revision >= (out.get(r.key)?.revision ?? 0)) out.set(r.key, r);
  return out;
}

/** Per window (`window|start`): series other than `__other__`, and count and sum over all series. */
function perWindow(results: Map<string, WindowResult>) {
  const out = new Map<string, { series: number; count: number; sum: number; other: number }>();
  for (const r of results.values()) {
    const k = `${r.window}|${r.start}`;
    const w = out.get(k) ?? { series: 0, count: 0, sum: 0, other: 0 };
    const isOther = Object.values(r.dims).every((v) => v === "__other__");
    out.set(k, { series: w.series + (isOther ? 0 : 1), count: w.count + r.eventCount, sum: w.sum + (r.values.sum as number), other: w.other + (isOther ? r.eventCount : 0) });
  }
  return out;
}

function plainTotals(list: TelemetryEvent[]) {
  const out = new Map<string, { count: number; sum: number }>();
  for (const e of list) {
    for (const [id, size] of [["1m", minute], ["1h", hour]] as const) {
      const k = `${id}|${e.ts - (e.ts % size)}`;
      const w = out.get(k) ?? { count: 0, sum: 0 };
      out.set(k, { count: w.count + 1, sum: w.sum + e.values.v! });
    }
  }
  return out;
}

test("series quotas add up to the limit exactly, so the shards together never exceed it", () => {
  for (const shards of [1, 7, 32]) {
    for (const max of [1, 5, 31, 32, 33, 100, 10_000]) {
      const quotas = Array.from({ length: shards }, (_, s) => seriesQuota(max, s, shards));
      assert.equal(quotas.reduce((a, b) => a + b, 0), max, `${max} over ${shards}`);
      assert.ok(Math.max(...quotas) - Math.min(...quotas) <= 1);
    }
  }
});

test("past maxSeries, new series fold into __other__: nothing lost, rollups within the limit too, folded events audited", async () => {
  const emitted: WindowResult[] = [];
  const h = await host(new MemoryStateStore(), 1, emitted);
  const list = events(1, 3000, 20, "a");
  const router = new Router([limited!], 1);
  for (let i = 0; i < list.length; i += 100) feed(h, router, list.slice(i, i + 100));
  await finish(h);

  const windows = perWindow(latest(emitted, "dev"));
  const plain = plainTotals(list);
  assert.deepEqual([...windows.keys()].sort(), [...plain.keys()].sort());
  let folded = 0;
  for (const [k, w] of windows) {
    assert.ok(w.series <= 5, `${k}: ${w.series} series`);
    assert.deepEqual([w.count, w.sum], [plain.get(k)!.count, plain.get(k)!.sum], k);
    assert.ok(w.other > 0, `${k}: 40 series, 5 admitted`);
    if (k.startsWith("1m|")) folded += w.other;
  }
  // An hour holds the series admitted in its minutes: the same five, not five per minute.
  assert.equal(windows.get(`1h|${t0}`)!.series, 5);

  // The audit counts every folded event once, in the minute its window starts.
  const audit = [...latest(emitted, auditRule.name).values()].filter((r) => r.dims.counter === "folded");
  assert.deepEqual(audit.map((r) => r.start).sort(), [t0, t0 + minute, t0 + 2 * minute]);
  assert.equal(audit.reduce((n, r) => n + r.eventCount, 0), folded);
  assert.deepEqual(h.folded(), { dev: folded });
  assert.equal(foldedAudit(t0 + 59_999, 3).start, t0);
  await h.actors.stop();
});

test("the admitted series survive a restart exactly: the same decisions as without it", async () => {
  const list = events(2, 4000, 60, "b");
  const router = new Router([limited!], 4);
  const batches = Array.from({ length: 40 }, (_, i) => list.slice(i * 100, i * 100 + 100));

  const straight: WindowResult[] = [];
  const a = await host(new MemoryStateStore(), 4, straight);
  for (const batch of batches) feed(a, router, batch);
  await finish(a);

  // Half the batches, a checkpoint, everything in memory lost, then the rest.
  const restarted: WindowResult[] = [];
  const store = new MemoryStateStore();
  const before = await host(store, 4, restarted);
  for (const batch of batches.slice(0, 20)) feed(before, router, batch);
  await before.checkpoint();
  before.actors.reset();
  const after = await host(store, 4, restarted);
  for (const batch of batches.slice(20)) feed(after, router, batch);
  await finish(after);

  const values = (emitted: WindowResult[]) => new Map([...latest(emitted, "dev")].map(([k, r]) => [k, [r.eventCount, r.values]]));
  const want = values(straight);
  assert.ok([...want.keys()].some((k) => k.includes("__other__")), "the limit was reached");
  assert.deepEqual(values(restarted), want);
  assert.deepEqual(after.folded(), a.folded());
  for (const [k, w] of perWindow(latest(restarted, "dev"))) assert.ok(w.series <= 5, k);
  await a.actors.stop();
  await after.actors.stop();
});

test("through a node: a metric over its maxSeries keeps every event, in at most maxSeries series plus __other__; the audit and status show the folded", async () => {
  const nats = await startTestNats();
  const nc = await connect({ servers: nats.url });
  const node = await startTestNode(nats.url, "metrics: [{name: devices, kind: status, groupBy: [device], aggregates: [count], window: 1m, maxSeries: 40, lateness: 1h}]");
  try {
    const base = Math.floor((Date.now() - 3 * hour) / minute) * minute;
    const random = prng(9);
    const list = Array.from({ length: 3000 }, (_, i) => ({ id: `e${i}`, ts: base + Math.floor(random() * 2 * minute), device: `dev-${Math.floor(random() * 300)}` }));
    for (let i = 0; i < list.length; i += 50) {
      nc.publish(`telemetry.r${i % 7}.status`, JSON.stringify(list.slice(i, i + 50).map((e) => ({ id: e.id, ts: e.ts, tags: { device: e.device } }))));
    }
    await nc.flush();
    const want = new Map<number, number>();
    for (const e of list) want.set(e.ts - (e.ts % minute), (want.get(e.ts - (e.ts % minute)) ?? 0) + 1);

    type Point = { start: number; dims: { device: string }; status: string; eventCount: number };
    const points = await eventually(
      async () => {
        const body = (await (await fetch(`http://127.0.0.1:${node.http.port}/v1/metrics/devices?window=1m&from=${base}&to=${base + 2 * minute}`)).json()) as { points: Point[] };
        if (body.points.some((p) => p.status === "provisional")) return undefined;
        const totals = new Map<number, number>();
        for (const p of body.points) totals.set(p.start, (totals.get(p.start) ?? 0) + p.eventCount);
        return JSON.stringify([...totals].sort()) === JSON.stringify([...want].sort()) ? body.points : undefined;
      },
      30_000,
      "every event counted in a final window",
    );
    const other = points.filter((p) => p.dims.device === "__other__");
    for (const start of want.keys()) {
      const series = points.filter((p) => p.start === start && p.dims.device !== "__other__").length;
      assert.ok(series <= 40, `${series} series`);
      assert.ok(series >= 20, `${series} series: folding starts before 40 only as far as the shards fill unevenly`);
    }
    const folded = other.reduce((n, p) => n + p.eventCount, 0);
    assert.ok(folded > 0);

    const audit = await eventually(async () => {
      const body = (await (await fetch(`http://127.0.0.1:${node.http.port}/v1/audit?from=0`)).json()) as { minutes: { folded: number; balanced: boolean; status: string }[] };
      return body.minutes.reduce((n, m) => n + m.folded, 0) === folded ? body.minutes : undefined;
    }, 15_000, `the audit to show ${folded} folded events`);
    assert.ok(audit.every((m) => m.balanced));
    const status = (await (await fetch(`http://127.0.0.1:${node.http.port}/v1/status`)).json()) as { folded: Record<string, number> };
    assert.deepEqual(status.folded, { devices: folded });
  } finally {
    await node.cleanup();
    await nc.close();
    await nats.cleanup();
  }
});

import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import type { TelemetryEvent } from "../actors/event.js";
import { expectedWindows, prng, type ExpectedRule, type ExpectedWindow } from "./expected.js";
import { eventually, startTestNats, startTestNode, tally, tempDir } from "./harness.js";


let nats: Awaited<ReturnType<typeof startTestNats>>;
let node: Awaited<ReturnType<typeof startTestNode>>;
let nc: NatsConnection;
const dir = tempDir("tally-rules-");
const minute = 60_000;
const base = Math.floor((Date.now() - 3 * 3_600_000) / minute) * minute;

before(async () => {
  nats = await startTestNats();
  node = await startTestNode(nats.url, "metrics: [{name: by_site, kind: status, groupBy: [site], aggregates: [count], window: 1m, lateness: 1h}]");
  nc = await connect({ servers: nats.url });
});

after(async () => {
  await nc?.close();
  await node?.cleanup();
  await nats?.cleanup();
  dir.remove();
});

function generate(seed: number, n: number): TelemetryEvent[] {
  const random = prng(seed);
  return Array.from({ length: n }, (_, i) => ({
    id: `${seed}-${i}`,
    ts: base + Math.floor(random() * 3 * minute),
    source: `r${Math.floor(random() * 30)}`,
    kind: "status",
    tags: { site: ["berlin", "osaka"][Math.floor(random() * 2)]!, line: String(Math.floor(random() * 3)) },
    values: { temperature: 20 + Math.floor(random() * 30) },
  }));
}

async function publish(events: TelemetryEvent[]) {
  for (const e of events) nc.publish(`telemetry.${e.source}.${e.kind}`, JSON.stringify({ id: e.id, ts: e.ts, tags: e.tags, values: e.values }));
  // Duplicates must not count either.
  for (const e of events.slice(0, 20)) nc.publish(`telemetry.${e.source}.${e.kind}`, JSON.stringify({ id: e.id, ts: e.ts, tags: e.tags, values: e.values }));
  await nc.flush();
}

/** Waits until the metric's windows carry exactly these values (the latest revision of each). */
async function expectMetric(rule: ExpectedRule, events: TelemetryEvent[], values: (w: ExpectedWindow) => Record<string, number>) {
  const want = new Map([...expectedWindows([rule], events)].map(([k, w]) => [k, JSON.stringify(values(w))]));
  let last = "";
  await eventually(
    async () => {
      const res = await fetch(`http://127.0.0.1:${node.http.port}/v1/metrics/${rule.name}?from=${base - minute}&to=${base + 10 * minute}`);
      if (res.status !== 200) return undefined;
      const body = (await res.json()) as { points: { start: number; dims: Record<string, string>; status: string; values: unknown }[] };
      const got = new Map(body.points.filter((p) => p.status !== "provisional").map((p) => [`${rule.name}|1m|${p.start}|${JSON.stringify(p.dims)}`, JSON.stringify(p.values)]));
      last = JSON.stringify([...got].sort());
      return last === JSON.stringify([...want].sort()) ? true : undefined;
    },
    30_000,
    `${rule.name} to equal the batch computation (last seen ${last}, want ${JSON.stringify([...want].sort())})`,
  );
}

test("a rule added live counts events after the change; with --backfill, the events before it too", async () => {
  const before = generate(1, 600);
  await publish(before);
  const bySite: ExpectedRule = { name: "by_site", kind: "status", groupBy: ["site"], windows: [{ id: "1m", size: minute, slide: minute }] };
  await expectMetric(bySite, before, (w) => ({ count: w.count }));

  // A new rule, no backfill: only what arrives after it is live.
  writeFileSync(join(dir.path, "by-line.yaml"), "metrics: [{name: by_line, kind: status, value: temperature, groupBy: [line], aggregates: [count, max, p50, distinct:source], window: 1m, lateness: 1h}]");
  assert.match(await tally(["rules", "apply", join(dir.path, "by-line.yaml"), "--nats", nats.url]), /added by_line/);
  await eventually(() => (node.node.metricRules.some((r) => r.name === "by_line") ? true : undefined), 10_000, "the node to see the new rule");
  const afterwards = generate(2, 600);
  await publish(afterwards);
  const byLine: ExpectedRule = { name: "by_line", kind: "status", value: "temperature", groupBy: ["line"], windows: [{ id: "1m", size: minute, slide: minute }] };
  const distinctSources = (events: TelemetryEvent[], start: number, line: string) =>
    new Set(events.filter((e) => e.tags.line === line && Math.floor(e.ts / minute) * minute === start).map((e) => e.source)).size;
  const p50Of = new Map<string, number>();
  await eventually(async () => {
    const res = await fetch(`http://127.0.0.1:${node.http.port}/v1/metrics/by_line?from=${base - minute}&to=${base + 10 * minute}`);
    const body = (await res.json()) as { points: { start: number; dims: Record<string, string>; status: string; values: Record<string, number> }[] };
    const want = expectedWindows([byLine], afterwards);
    if (body.points.length !== want.size || body.points.some((p) => p.status === "provisional")) return undefined;
    for (const p of body.points) {
      const w = want.get(`by_line|1m|${p.start}|${JSON.stringify(p.dims)}`);
      if (!w || p.values.count !== w.count || p.values.max !== w.max) return undefined;
      if (p.values["distinct:source"] !== distinctSources(afterwards, p.start, p.dims.line!)) return undefined;
      p50Of.set(`${p.start}|${p.dims.line}`, p.values.p50!);
    }
    return true;
  }, 30_000, "by_line to count exactly the events after the change");
  assert.ok(p50Of.size > 0);
  await expectMetric(bySite, [...before, ...afterwards], (w) => ({ count: w.count }));

  // A new rule with backfill: as if it had existed from the start.
  writeFileSync(join(dir.path, "all.yaml"), "metrics: [{name: all_sites, kind: status, value: temperature, groupBy: [site], aggregates: [count, sum], window: 1m, lateness: 1h}]");
  const out = await tally(["rules", "apply", join(dir.path, "all.yaml"), "--nats", nats.url, "--backfill", "6h"]);
  assert.match(out, /backfilled all_sites: 1200 events/);
  const afterBackfill = generate(3, 300);
  await publish(afterBackfill);
  const allSites: ExpectedRule = { name: "all_sites", kind: "status", value: "temperature", groupBy: ["site"], windows: [{ id: "1m", size: minute, slide: minute }] };
  await expectMetric(allSites, [...before, ...afterwards, ...afterBackfill], (w) => ({ count: w.count, sum: w.sum }));

  // ls and rm; the node drops a removed rule within seconds.
  assert.match(await tally(["rules", "ls", "--nats", nats.url]), /by_line[\s\S]*all_sites|all_sites[\s\S]*by_line/);
  assert.match(await tally(["rules", "rm", "by_line", "--nats", nats.url]), /removed by_line/);
  await eventually(() => (node.node.metricRules.some((r) => r.name === "by_line") ? undefined : true), 10_000, "the node to drop the rule");
});

test("the admin API validates and applies rules", async () => {
  const base = `http://127.0.0.1:${node.http.port}/v1/rules`;
  const bad = await fetch(`${base}/broken`, { method: "PUT", body: JSON.stringify({ kind: "status", aggregates: ["p99"] }) });
  assert.equal(bad.status, 400);
  assert.match(((await bad.json()) as { error: string }).error, /needs a "value"/);
  const ok = await fetch(`${base}/temps`, { method: "PUT", body: JSON.stringify({ kind: "status", value: "temperature", aggregates: ["p99"] }) });
  assert.equal(ok.status, 200);
  assert.ok(Date.parse(((await ok.json()) as { activeFrom: string }).activeFrom) > Date.now() - 1000);
  await eventually(() => (node.node.metricRules.some((r) => r.name === "temps") ? true : undefined), 10_000, "the node to see the rule");
  const list = (await (await fetch(base)).json()) as { rules: { name: string }[] };
  assert.ok(list.rules.some((r) => r.name === "temps"));
  assert.equal((await fetch(`${base}/temps`, { method: "DELETE" })).status, 200);
  assert.equal((await fetch(`${base}/temps`, { method: "DELETE" })).status, 404);
});

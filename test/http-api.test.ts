import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import WebSocket from "ws";
import { startTestNats, startTestNode, tally } from "./harness.js";

const rules = `
metrics:
  - name: battery
    kind: status
    value: battery
    groupBy: [site]
    aggregates: [count, sum, min, max, avg]
    window: 1m
    lateness: 1h
`;

let nats: Awaited<ReturnType<typeof startTestNats>>;
let node: Awaited<ReturnType<typeof startTestNode>>;
let base: string;

before(async () => {
  nats = await startTestNats();
  node = await startTestNode(nats.url, rules);
  base = `http://127.0.0.1:${node.http.port}`;
});

after(async () => {
  await node?.cleanup();
  await nats?.cleanup();
});

type Message = { type: string; metric?: string; point?: { start: number; dims: Record<string, string>; status: string; values: Record<string, number> } };

/** Opens a subscription and resolves with a reader that awaits messages matching a predicate. */
async function subscribe(query: string) {
  const ws = new WebSocket(`ws://127.0.0.1:${node.http.port}/v1/subscribe?${query}`);
  const received: Message[] = [];
  const waiters: { match: (m: Message) => boolean; resolve: (m: Message) => void }[] = [];
  ws.on("message", (data) => {
    const m = JSON.parse(String(data)) as Message;
    received.push(m);
    for (const w of waiters.splice(0)) (w.match(m) ? w.resolve(m) : waiters.push(w));
  });
  const next = (match: (m: Message) => boolean) =>
    new Promise<Message>((resolve) => {
      const found = received.find(match);
      if (found) resolve(found);
      else waiters.push({ match, resolve });
    });
  await next((m) => m.type === "subscribed");
  return { ws, received, next };
}

test("healthz answers 200 when the node is ready", async () => {
  const res = await fetch(`${base}/healthz`);
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { status: "ok" });
});

test("POST /v1/events, then the WebSocket pushes provisional and final results and the query returns them", async () => {
  const minute = Math.floor((Date.now() - 2 * 3_600_000) / 60_000) * 60_000;
  const sub = await subscribe("metric=battery&where=site:berlin");
  const post = await fetch(`${base}/v1/events`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify([
      { source: "r1", kind: "status", id: "h1", ts: minute + 1_000, tags: { site: "berlin" }, values: { battery: 80 } },
      { source: "r2", kind: "status", id: "h2", ts: new Date(minute + 2_000).toISOString(), tags: { site: "berlin" }, values: { battery: 60 } },
      { source: "r2", kind: "status", id: "h3", ts: minute + 3_000, tags: { site: "lyon" }, values: { battery: 10 } },
    ]),
  });
  assert.equal(post.status, 202);
  assert.deepEqual(await post.json(), { accepted: 3 });

  const final = await sub.next((m) => m.type === "result" && m.point!.status === "final");
  assert.equal(final.metric, "battery");
  assert.equal(final.point!.start, minute);
  assert.deepEqual(final.point!.dims, { site: "berlin" });
  assert.deepEqual(final.point!.values, { count: 2, sum: 140, min: 60, max: 80, avg: 70 });
  assert.ok(sub.received.every((m) => m.type === "subscribed" || m.point!.dims.site === "berlin"), "the where filter holds");
  sub.ws.close();

  const q = await fetch(`${base}/v1/metrics/battery?from=${minute}&to=${new Date(minute + 60_000).toISOString()}&where=site:berlin`);
  assert.equal(q.status, 200);
  const body = (await q.json()) as { metric: string; points: { start: number; end: number; status: string; revision: number; values: unknown }[] };
  assert.equal(body.metric, "battery");
  assert.equal(body.points.length, 1);
  assert.deepEqual(
    { start: body.points[0]!.start, end: body.points[0]!.end, status: body.points[0]!.status, revision: body.points[0]!.revision },
    { start: minute, end: minute + 60_000, status: "final", revision: 1 },
  );
  const all = (await (await fetch(`${base}/v1/metrics/battery?from=${minute}&to=${minute + 60_000}`)).json()) as { points: unknown[] };
  assert.equal(all.points.length, 2, "berlin and lyon");
});

test("clear errors for bad requests; the node stays up", async () => {
  const cases: [string, RequestInit | undefined, number, RegExp][] = [
    ["/v1/metrics/nope", undefined, 404, /unknown metric/],
    ["/v1/metrics/battery?from=yesterday", undefined, 400, /"from"/],
    ["/v1/metrics/battery?window=5m", undefined, 400, /no window/],
    ["/v1/metrics/battery?where=site", undefined, 400, /tag:value/],
    ["/v1/events", { method: "POST", body: "{oops" }, 400, /not JSON/],
    ["/v1/events", { method: "POST", body: JSON.stringify({ id: "x", ts: 1 }) }, 400, /"source" and "kind"/],
    ["/v1/events", { method: "POST", body: JSON.stringify({ source: "a.b", kind: "k", id: "x", ts: 1 }) }, 400, /"source" and "kind"/],
    ["/nowhere", undefined, 404, /no route/],
  ];
  for (const [path, init, status, message] of cases) {
    const res = await fetch(base + path, init);
    assert.equal(res.status, status, path);
    assert.match(((await res.json()) as { error: string }).error, message, path);
  }
  const ws = new WebSocket(`ws://127.0.0.1:${node.http.port}/v1/subscribe?where=broken`);
  const code = await new Promise<number>((resolve) => ws.on("close", (c) => resolve(c)));
  assert.equal(code, 1008);
  assert.equal((await fetch(`${base}/healthz`)).status, 200);
});

test("metrics list and status describe the node", async () => {
  const metrics = (await (await fetch(`${base}/v1/metrics`)).json()) as { metrics: { name: string; windows: string[]; aggregates: string[] }[] };
  assert.deepEqual(metrics.metrics.map((m) => [m.name, m.windows, m.aggregates]), [
    ["battery", ["1m"], ["count", "sum", "min", "max", "avg"]],
    ["_audit", ["1m"], ["count"]],
  ]);
  const status = (await (await fetch(`${base}/v1/status`)).json()) as { ready: boolean; partitions: unknown[]; shards: unknown[] };
  assert.equal(status.ready, true);
  assert.equal(status.partitions.length, 24);
  assert.equal(status.shards.length, 32);
});

test("retention: aggregates older than their window size's retention are deleted", async () => {
  const { parseRetention, keepFor } = await import("../node/retention.js");
  const policy = parseRetention("1h=1y, 1m=30d, 1d=forever");
  assert.equal(keepFor(policy, 10_000), 30 * 86_400_000);
  assert.equal(keepFor(policy, 60_000), 30 * 86_400_000);
  assert.equal(keepFor(policy, 3_600_000), 365 * 86_400_000);
  assert.equal(keepFor(policy, 86_400_000), Infinity);
  assert.throws(() => parseRetention("1m"), /size=duration/);

  const query = async () => ((await (await fetch(`${base}/v1/metrics/battery?from=0&to=${Date.now()}`)).json()) as { points: unknown[] }).points.length;
  const before = await query();
  assert.ok(before > 0, "the earlier test left results");
  await node.node.enforceRetention(Date.now() + 29 * 86_400_000);
  assert.equal(await query(), before, "kept within 30 days");
  await node.node.enforceRetention(Date.now() + 31 * 86_400_000);
  assert.equal(await query(), 0, "1-minute aggregates go after 30 days");
});

test("tally status lists the live node with its partitions, shards, lag and watermark", async () => {
  const out = JSON.parse(await tally(["status", "--nats", nats.url, "--json"])) as {
    nodes: { id: string; http: string; partitions: number[]; shards: number[]; lag: { partitions: Record<string, number>; mailbox: number } }[];
  };
  const me = out.nodes.find((n) => n.id === node.node.id);
  assert.ok(me, JSON.stringify(out));
  assert.equal(me.partitions.length, 24);
  assert.equal(me.shards.length, 32);
  assert.equal(Object.keys(me.lag.partitions).length, 24);
  assert.equal(me.http, `http://127.0.0.1:${node.http.port}/`);
  assert.match(await tally(["status", "--nats", nats.url]), new RegExp(`node ${node.node.id} .*\\n  partitions 24 \\(0-23\\)`));
});

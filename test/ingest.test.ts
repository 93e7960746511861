import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, headers, type NatsConnection } from "@nats-io/transport-node";
import type { TelemetryEvent } from "../actors/event.js";
import type { WindowResult } from "../actors/window-result.js";
import { encodeEventBatch } from "../proto/codec.js";
import { streams } from "../node/streams.js";
import { expectedWindows, prng, shuffle, type ExpectedRule } from "./expected.js";
import { eventually, startTestNats, startTestNode, tally } from "./harness.js";


const rulesYaml = `
metrics:
  - name: temp
    kind: status
    value: temperature
    groupBy: [site]
    aggregates: [count, sum, min, max, avg]
    windows: [1m, 10s]
    lateness: 1h
  - name: errors
    kind: error
    groupBy: [code]
    aggregates: [count]
    window: 1m
    lateness: 1h
  - name: all
    kind: "*"
    aggregates: [count]
    window: { size: 2m, slide: 1m }
    lateness: 1h
`;
const expectedRules: ExpectedRule[] = [
  { name: "temp", kind: "status", value: "temperature", groupBy: ["site"], windows: [{ id: "1m", size: 60_000, slide: 60_000 }, { id: "10s", size: 10_000, slide: 10_000 }] },
  { name: "errors", kind: "error", groupBy: ["code"], windows: [{ id: "1m", size: 60_000, slide: 60_000 }] },
  { name: "all", kind: "*", groupBy: [], windows: [{ id: "2m/1m", size: 120_000, slide: 60_000 }] },
];

let nats: Awaited<ReturnType<typeof startTestNats>>;
let nc: NatsConnection;

before(async () => {
  nats = await startTestNats();
  nc = await connect({ servers: nats.url });
});

after(async () => {
  await nc?.close();
  await nats?.cleanup();
});

/** Three hours ago, so the windows' end + 1 h lateness is in the past and idleness finalizes them. */
function generate(seed: number, count: number): TelemetryEvent[] {
  const random = prng(seed);
  const base = Math.floor((Date.now() - 3 * 3_600_000) / 60_000) * 60_000;
  const sites = ["berlin", "austin", "osaka"];
  const codes = ["E101", "E204", "E310"];
  const events: TelemetryEvent[] = [];
  for (let i = 0; i < count; i++) {
    const source = `robot-${Math.floor(random() * 40)}`;
    const ts = base + Math.floor(random() * 4 * 60_000);
    const site = sites[Math.floor(random() * sites.length)]!;
    if (random() < 0.8) {
      events.push({ id: `s-${seed}-${i}`, ts, source, kind: "status", tags: { site }, values: { temperature: 20 + Math.floor(random() * 40), battery: 50 } });
    } else {
      events.push({ id: `e-${seed}-${i}`, ts, source, kind: "error", tags: { site, code: codes[Math.floor(random() * 3)]! }, values: {} });
    }
  }
  return events;
}

/** Publishes events the three ways robots can: single JSON, JSON arrays, protobuf batches. */
async function publish(events: TelemetryEvent[], random: () => number) {
  const pb = headers();
  pb.set("Content-Type", "application/protobuf");
  const groups = new Map<string, TelemetryEvent[]>();
  for (const e of events) {
    const how = random();
    const body = { id: e.id, ts: e.ts, tags: e.tags, values: e.values };
    if (how < 0.4) {
      nc.publish(`telemetry.${e.source}.${e.kind}`, JSON.stringify(body));
    } else {
      const key = `${e.source}.${e.kind}.${how < 0.7 ? "json" : "pb"}`;
      groups.set(key, [...(groups.get(key) ?? []), e]);
    }
  }
  for (const [key, group] of groups) {
    const [source, kind, format] = key.split(".");
    for (let i = 0; i < group.length; i += 25) {
      const slice = group.slice(i, i + 25);
      if (format === "json") {
        nc.publish(`telemetry.${source}.${kind}`, JSON.stringify(slice.map((e) => ({ id: e.id, ts: e.ts, tags: e.tags, values: e.values }))));
      } else {
        nc.publish(`telemetry.${source}.${kind}`, encodeEventBatch(slice), { headers: pb });
      }
    }
  }
  await nc.flush();
}

/** Awaits `promise`, failing with `describe()` if it takes longer than `ms`. */
async function withTimeout<T>(promise: Promise<T>, ms: number, describe: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(describe())), ms)));
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function resultKey(r: Pick<WindowResult, "metric" | "window" | "start" | "dims">): string {
  return `${r.metric}|${r.window}|${r.start}|${JSON.stringify(r.dims)}`;
}

test("out-of-order, duplicated events in three encodings finalize exactly as a batch computation", async () => {
  const random = prng(7);
  const events = generate(7, 3000);
  const duplicates = events.filter(() => random() < 0.15);
  const input = shuffle([...events, ...duplicates], random);
  const expected = expectedWindows(expectedRules, input);

  const node = await startTestNode(nats.url, rulesYaml);
  try {
    // Every window final with all its events. On a loaded machine a partition may look idle
    // before its router caught up, so a window can be final early and corrected after: the
    // latest revision is what must be exact.
    const finals = new Map<string, WindowResult>();
    const complete = () => [...expected].every(([key, want]) => finals.get(key)?.eventCount === want.count);
    const allFinal = new Promise<void>((resolve) =>
      node.node.onResult((r) => {
        if (r.status === "provisional" || r.metric === "_audit") return;
        finals.set(resultKey(r), r);
        if (complete()) resolve();
      }),
    );
    await publish(input, random);
    await withTimeout(allFinal, 30_000, () => {
      const missing = [...expected.keys()].filter((k) => !finals.has(k));
      return `final results for ${finals.size} of ${expected.size} windows; missing e.g. ${missing.slice(0, 3).join(", ")}; status ${JSON.stringify(node.node.counters)}`;
    });

    for (const [key, want] of expected) {
      const got = finals.get(key);
      assert.ok(got, `no final result for ${key}`);
      assert.ok(got.status === "final" ? got.revision === 1 : got.status === "corrected" && got.revision > 1, `${key}: ${got.status} ${got.revision}`);
      assert.equal(got.eventCount, want.count, key);
      assert.equal(got.values.count, want.count, key);
      if (key.startsWith("temp|")) {
        assert.equal(got.values.sum, want.sum, key);
        assert.equal(got.values.min, want.min, key);
        assert.equal(got.values.max, want.max, key);
        assert.equal(got.values.avg, want.sum / want.count, key);
      }
    }
    assert.equal(finals.size, expected.size, "no window beyond the expected ones");
    const c = node.node.counters;
    assert.equal(c.events, input.length);
    assert.equal(c.duplicates, input.length - new Set(input.map((e) => e.id)).size);
    assert.equal(c.rejected, 0);

    // The query API serves the same final values.
    const from = Math.min(...events.map((e) => e.ts)) - 120_000;
    const res = await fetch(`http://127.0.0.1:${node.http.port}/v1/metrics/temp?window=1m&from=${from}&to=${Date.now()}`);
    const body = (await res.json()) as { points: { start: number; dims: Record<string, string>; status: string; values: Record<string, number> }[] };
    // Without window=, the coarsest window whose boundaries from and to fall on.
    const pick = async (f: number, t: number) =>
      ((await (await fetch(`http://127.0.0.1:${node.http.port}/v1/metrics/temp?from=${f}&to=${t}`)).json()) as { window: string }).window;
    const aligned = Math.floor(from / 60_000) * 60_000;
    assert.equal(await pick(aligned, aligned + 5 * 60_000), "1m");
    assert.equal(await pick(aligned + 10_000, aligned + 5 * 60_000), "10s");
    assert.equal(await pick(aligned + 1, aligned + 5 * 60_000), "10s", "the finest when none fits");
    const wanted = [...expected.keys()].filter((k) => k.startsWith("temp|1m|"));
    assert.equal(body.points.length, wanted.length);
    for (const p of body.points) {
      const want = expected.get(resultKey({ metric: "temp", window: "1m", start: p.start, dims: p.dims }))!;
      assert.notEqual(p.status, "provisional");
      assert.deepEqual(p.values, { count: want.count, sum: want.sum, min: want.min, max: want.max, avg: want.sum / want.count });
    }
  } finally {
    await node.cleanup();
  }
});

test("bad input goes to the DLQ with its reason and bytes, and the node keeps aggregating", async () => {
  const node = await startTestNode(nats.url, rulesYaml);
  try {
    const jsm = await jetstreamManager(nc);
    const before = (await jsm.streams.info(streams.dlq)).state.messages;
    const now = Date.now();
    const bad: [subject: string, payload: string, reason: string][] = [
      ["telemetry.r1.status", "{not json", "invalid_json"],
      ["telemetry.r1.status", JSON.stringify({ ts: now, values: { temperature: 1 } }), "missing_id"],
      ["telemetry.r1.status", JSON.stringify({ id: "x1", values: {} }), "missing_ts"],
      ["telemetry.r1.status", JSON.stringify({ id: "x2", ts: "yesterday-ish" }), "bad_ts"],
      ["telemetry.r1.status", JSON.stringify({ id: "x3", ts: now + 86_400_000 }), "future_ts"],
      ["telemetry.r1.status", JSON.stringify({ id: "x4", ts: now, values: { temperature: "hot" } }), "bad_values"],
      ["telemetry.r1.status", JSON.stringify({ id: "x5", ts: now, tags: { site: 3 } }), "bad_tags"],
      ["telemetry.r1.status", JSON.stringify({ id: "x6", ts: now, tags: Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`t${i}`, "v"])) }), "too_many_tags"],
      ["telemetry.r1.status", JSON.stringify("just a string"), "not_an_object"],
      ["telemetry.r1.status.extra", JSON.stringify({ id: "x7", ts: now }), "bad_subject"],
    ];
    const lyon = new Promise<WindowResult>((resolve) => {
      node.node.onResult((r) => r.metric === "temp" && r.dims.site === "lyon" && r.window === "1m" && resolve(r));
    });
    for (const [subject, payload] of bad) nc.publish(subject, payload);
    const pb = headers();
    pb.set("Content-Type", "application/protobuf");
    nc.publish("telemetry.r1.status", new Uint8Array([0xff, 0xff, 0xff, 0x01]), { headers: pb });
    // A batch with one bad element: the good one is aggregated, the bad one filed alone.
    nc.publish("telemetry.r2.status", JSON.stringify([{ id: "ok-1", ts: now, tags: { site: "lyon" }, values: { temperature: 30 } }, { id: "bad-1" }]));
    await nc.flush();

    const js = (await import("@nats-io/jetstream")).jetstream(nc);
    const consumer = await js.consumers.get(streams.dlq, { opt_start_seq: before + 1 });
    const reasons: string[] = [];
    const bytes: string[] = [];
    const wantCount = bad.length + 2;
    while (reasons.length < wantCount) {
      const m = await consumer.next({ expires: 10_000 });
      assert.ok(m, `DLQ holds only ${reasons.length} of ${wantCount} rejects`);
      reasons.push(m.headers!.get("Tally-Reason"));
      bytes.push(m.string());
      assert.equal(m.headers!.get("Tally-Subject").startsWith("telemetry.r"), true);
    }
    for (const [, payload, reason] of bad) {
      assert.ok(reasons.includes(reason), `no ${reason} in ${reasons.join(",")}`);
      assert.ok(bytes.includes(payload), `original bytes kept for ${reason}`);
    }
    assert.ok(reasons.includes("invalid_protobuf"));
    assert.ok(reasons.includes("missing_ts") && bytes.includes(JSON.stringify({ id: "bad-1" })));

    const provisional = await withTimeout(lyon, 30_000, () => "no result for the good event of the mixed batch");
    assert.equal(provisional.values.count, 1);
    assert.ok(node.node.isReady);

    // `tally dlq ls` shows them; `tally dlq replay` re-publishes the original bytes on the original subject.
    const listed = (await tally(["dlq", "ls", "--nats", nats.url, "--reason", "invalid_json", "--json"])).split("\n").filter(Boolean);
    const invalid = listed.map((line) => JSON.parse(line) as { reason: string; subject: string; payload: string });
    assert.ok(invalid.some((l) => l.payload === "{not json" && l.subject === "telemetry.r1.status"));
    assert.ok(invalid.every((l) => l.reason === "invalid_json"));
    const replayed = await tally(["dlq", "replay", "--nats", nats.url, "--reason", "invalid_json"]);
    assert.match(replayed, new RegExp(`replayed ${invalid.length} reject`));
    const again = await eventually(async () => {
      const lines = (await tally(["dlq", "ls", "--nats", nats.url, "--reason", "invalid_json", "--json"])).split("\n").filter(Boolean);
      return lines.length === 2 * invalid.length ? lines : undefined;
    }, 15_000, "the replayed rejects to be filed again");
    assert.equal(again.length, 2 * invalid.length);

    // The audit balances: accepted = aggregated + unmatched + duplicates + dlq, minute by minute.
    const audit = (await (await fetch(`http://127.0.0.1:${node.http.port}/v1/audit?from=0`)).json()) as { minutes: { balanced: boolean; accepted: number; dlq: number }[] };
    assert.ok(audit.minutes.length > 0);
    assert.ok(audit.minutes.every((m) => m.balanced), JSON.stringify(audit.minutes));
    assert.ok(audit.minutes.reduce((n, m) => n + m.dlq, 0) >= wantCount);
  } finally {
    await node.cleanup();
  }
});

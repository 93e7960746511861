import { test } from "node:test";
import assert from "node:assert/strict";
import { resolveAggregation } from "../actors/aggregations/aggregation.js";
import { actorKey, saltedKey } from "../actors/actor-keys.js";
import type { TelemetryEvent } from "../actors/event.js";
import { Router, type WindowPartial } from "../actors/router.js";
import { parseRules } from "../actors/rules.js";
import { encodeStates } from "../actors/window-actor.js";
import { decodeMailbox, encodeMailbox, encodeMailboxJson, type MailboxMessage } from "../node/mailbox-codec.js";

const t0 = Date.UTC(2026, 10, 24, 10, 0, 0);

function partial(dimValues: Record<string, string>, fields: Partial<WindowPartial> = {}): WindowPartial {
  const key = actorKey("cycle", "1m", t0, JSON.stringify(Object.values(dimValues)));
  return { key, metric: "cycle", window: "1m", start: t0, end: t0 + 60_000, dims: dimValues, agg: { count: 1, sum: 4.5, min: 4.5, max: 4.5 }, ...fields };
}

const roundTrip = (m: MailboxMessage) => decodeMailbox(encodeMailbox(m));

test("partials round-trip every field", () => {
  const shared = { site: "berlin", arm: "left" };
  const partials: WindowPartial[] = [
    partial(shared),
    // The same series in another window: one dims object for both, as the router makes them.
    { ...partial(shared), key: actorKey("cycle", "5m", t0, JSON.stringify(["berlin", "left"])), window: "5m", end: t0 + 300_000 },
    partial({ site: "hamburg", arm: "right" }, { agg: { count: 3, sum: 12.25, min: -1.5, max: 1e308 } }),
    // An empty partial (a marker): ±Infinity, which JSON could not carry.
    partial({ site: "köln" }, { agg: { count: 0, sum: 0, min: Infinity, max: -Infinity }, salts: [0, 3, 17] }),
    partial({ site: "x" }, { agg: { count: 2, sum: -0, min: -Infinity, max: Infinity } }),
    partial({ site: "y" }, { agg: { count: 0.5, sum: NaN, min: 5e-324, max: -0 } }),
    { ...partial({ site: "y" }), key: saltedKey(partial({ site: "y" }).key, 3), fromSub: { salt: 3, n: 12, done: true, born: t0 + 1234 } },
    partial({ site: "z" }, { hold: actorKey("cycle", "10s", t0, '["z"]'), release: actorKey("cycle", "10s", t0 + 10_000, '["z"]') }),
    // Unicode, JSON escapes (quotes, tabs, backslashes) and an empty value, in dims and key.
    partial({ "ünïcødé 🚀": "välue 日本語 🚀", q: 'say "hi"\tthere\\', empty: "" }),
    // Dims that are not in the key at all (as a test's partial may have them), or none.
    { ...partial({ site: "berlin" }), dims: { other: "not-in-the-key" } },
    { ...partial({ site: "berlin" }), dims: {} },
    { ...partial({}), metric: "other", key: actorKey("other", "1h", t0, "[]"), window: "1h", start: t0 - 0.5, end: 2 ** 53 },
  ];
  const message: MailboxMessage = { type: "partials", partition: 23, origin: "bf:cycle@1700000000000:23", first: 2 ** 40 + 1, last: 2 ** 53 - 1, partials };
  const back = roundTrip(message);
  assert.deepStrictEqual(back, message);
  assert.ok(back.type === "partials");
  assert.equal(back.partials[0]!.dims, back.partials[1]!.dims, "one series' partials share one dims object");
  assert.ok(Object.is(back.partials[4]!.agg.sum, -0));

  const forwarded: MailboxMessage = { type: "forwarded", partials: partials.slice(2, 4) };
  assert.deepStrictEqual(roundTrip(forwarded), forwarded);
  assert.deepStrictEqual(roundTrip({ type: "partials", partition: 0, first: 1, last: 1, partials: [] }), { type: "partials", partition: 0, first: 1, last: 1, partials: [] });
});

test("aggregate states of real aggregations round-trip as their own bytes", () => {
  const rules = parseRules("metrics: [{name: cycle, kind: perf, value: v, groupBy: [site], aggregates: [count, p50, p99, distinct:source, top3:code, last], window: 1m}]");
  const events: TelemetryEvent[] = Array.from({ length: 500 }, (_, i) => ({
    id: `e${i}`,
    ts: t0 + i,
    source: `robot-${i % 37}`,
    kind: "perf",
    tags: { site: `s${i % 3}`, code: `E${(i * i) % 11}` },
    values: { v: (i % 97) / 7 },
  }));
  const partials = new Router(rules, 1).route(events).byShard.get(0)!;
  assert.equal(partials.length, 3);
  const back = roundTrip({ type: "forwarded", partials });
  assert.ok(back.type === "forwarded");
  for (const [i, p] of partials.entries()) {
    const got: WindowPartial = back.partials[i]!;
    assert.deepStrictEqual({ ...got, states: undefined }, { ...p, states: undefined });
    assert.deepEqual(Object.keys(got.states!), Object.keys(p.states!));
    for (const [stateKey, state] of Object.entries(p.states!)) {
      const aggregation = resolveAggregation(stateKey);
      const bytes = got.states![stateKey];
      assert.ok(bytes instanceof Uint8Array, `${stateKey} arrives as bytes`);
      assert.deepEqual(Buffer.from(bytes as Uint8Array), Buffer.from(aggregation.encode(state)));
      assert.deepEqual(aggregation.result(aggregation.decode(bytes), { sizeMs: 60_000 }), aggregation.result(state, { sizeMs: 60_000 }));
    }
  }
  // A window's hand-over carries states as base64 (encodeStates): the same bytes on the wire.
  const handedOver = partials.map((p) => ({ ...p, states: encodeStates(p.states!) }));
  assert.deepStrictEqual(roundTrip({ type: "forwarded", partials: handedOver }), back);
  // And a late partial's states, as they arrived, go up as base64 again.
  assert.deepStrictEqual(encodeStates(back.partials[0]!.states!), handedOver[0]!.states);
  // An empty states object stays one.
  assert.deepStrictEqual(roundTrip({ type: "forwarded", partials: [partial({ site: "a" }, { states: {} })] }), { type: "forwarded", partials: [partial({ site: "a" }, { states: {} })] });
});

test("marks round-trip, no event seen yet included", () => {
  const marks: MailboxMessage = { type: "marks", marks: [[0, { watermark: t0, idle: false }], [7, { watermark: -Infinity, idle: true }]] };
  assert.deepStrictEqual(roundTrip(marks), marks);
});

test("a JSON message from before the binary layout still decodes", () => {
  // As the previous version wrote it: an empty partial's ±Infinity as null, states as base64.
  const p50 = resolveAggregation("p50");
  const sketch = p50.init();
  p50.addValue!(sketch, 12);
  const state = Buffer.from(p50.encode(sketch)).toString("base64");
  const key = actorKey("cycle", "1m", t0, '["berlin"]');
  const old = JSON.stringify({
    type: "partials",
    partition: 3,
    first: 10,
    last: 12,
    partials: [
      { key, metric: "cycle", window: "1m", start: t0, end: t0 + 60_000, dims: { site: "berlin" }, agg: { count: 1, sum: 12, min: 12, max: 12 }, states: { quantiles: state } },
      { key, metric: "cycle", window: "1m", start: t0, end: t0 + 60_000, dims: { site: "berlin" }, agg: { count: 0, sum: 0, min: null, max: null }, salts: [1] },
    ],
  });
  const back = decodeMailbox(Buffer.from(old));
  assert.ok(back.type === "partials");
  assert.equal(back.partials[0]!.states!.quantiles, state);
  assert.deepStrictEqual(back.partials[1]!.agg, { count: 0, sum: 0, min: Infinity, max: -Infinity });
  assert.deepStrictEqual(back.partials[1]!.salts, [1]);

  const message: MailboxMessage = { type: "forwarded", partials: [partial({ site: "a" }, { hold: "h" })] };
  assert.deepStrictEqual(decodeMailbox(encodeMailboxJson(message)), message);
});

test("a malformed message throws a clear error", () => {
  const good = encodeMailbox({ type: "partials", partition: 1, first: 1, last: 2, partials: [partial({ site: "berlin" }), partial({ site: "köln" }, { salts: [1] })] });
  // Every truncation, anywhere.
  for (let n = 0; n < good.length; n++) assert.throws(() => decodeMailbox(good.subarray(0, n)), /malformed mailbox message/, `cut at ${n}`);
  const trailing = Buffer.concat([good, Buffer.from([0])]);
  assert.throws(() => decodeMailbox(trailing), /malformed mailbox message.*after the tables/);
  const badType = Buffer.from(good);
  badType[1] = 9;
  assert.throws(() => decodeMailbox(badType), /malformed mailbox message.*unknown message type 9/);
  const badTables = Buffer.from(good);
  badTables.writeUInt32LE(good.length + 5, 2);
  assert.throws(() => decodeMailbox(badTables), /malformed mailbox message.*tables at/);
  assert.throws(() => decodeMailbox(Buffer.from('{"type": "partials", "partials": [')), /malformed mailbox message/);
  assert.throws(() => decodeMailbox(Buffer.from('{"type": "other"}')), /malformed mailbox message.*unknown message type "other"/);
  // And one that cannot be written says so, rather than writing what would read as another number.
  assert.throws(() => encodeMailbox({ type: "partials", partition: -1, first: 1, last: 2, partials: [] }), /-1 is not a sequence/);
});

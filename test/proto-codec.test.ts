import { test } from "node:test";
import assert from "node:assert/strict";
import { create, toBinary } from "@bufbuild/protobuf";
import type { TelemetryEvent } from "../actors/event.js";
import { decodeEventBatch, encodeEventBatch } from "../proto/codec.js";
import { readEventBatch } from "../proto/event-batch-reader.js";
import { appendEventBatch } from "../proto/append-event-batch.js";
import { EventColumns } from "../actors/event-columns.js";
import { idFingerprint, idFingerprintOfBytes } from "../actors/id-fingerprint.js";
import { decodePayload, decodePayloadInto } from "../actors/decode.js";
import { defaultLimits } from "../actors/event.js";
import { EventBatchSchema, type EventBatch } from "../proto/gen/tally_pb.js";
import { mulberry32 as rng } from "../sim/fleet.js";


const sample: TelemetryEvent[] = [
  {
    id: "e1",
    ts: 1_700_000_000_000,
    source: "robot-7",
    kind: "perf",
    tags: { site: "berlin", arm: "left" },
    values: { latency_ms: 12.5, temp: -3.25 },
  },
  { id: "e2", ts: 1_699_999_999_000, source: "robot-7", kind: "status", tags: {}, values: {} },
  { id: "e3", ts: -86_400_000, source: "svc", kind: "error", tags: { site: "berlin" }, values: { code: 503 } },
  {
    id: "e4",
    ts: Number.MAX_SAFE_INTEGER,
    source: "",
    kind: "perf",
    tags: { "ünïcødé 🚀": "välue", empty: "" },
    values: { big: 1e308, tiny: 5e-324, zero: -0, inf: Infinity },
  },
  { id: "e5", ts: Number.MIN_SAFE_INTEGER, source: "s", kind: "k", tags: { __proto__x: "a" }, values: { site: 1 } },
];

test("round-trips hand-picked events", () => {
  const bytes = encodeEventBatch(sample);
  assert.deepEqual(decodeEventBatch(bytes), sample);
});

test("round-trips an empty batch", () => {
  assert.deepEqual(decodeEventBatch(encodeEventBatch([])), []);
});

test("round-trips a __proto__ tag key as an own property", () => {
  const tags: Record<string, string> = {};
  Object.defineProperty(tags, "__proto__", { value: "p", enumerable: true, writable: true, configurable: true });
  const e: TelemetryEvent = { id: "p", ts: 1, source: "s", kind: "k", tags, values: {} };
  const [out] = decodeEventBatch(encodeEventBatch([e]));
  assert.equal(Object.getPrototypeOf(out.tags), Object.prototype);
  assert.deepEqual(Object.entries(out.tags), [["__proto__", "p"]]);
});

test("round-trips 1000 random events", () => {
  const r = rng(42);
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)];
  const words = ["site", "berlin", "paris", "arm", "left", "right", "fw", "1.2.3", "", "zone-ä"];
  const now = 1_700_000_000_000;
  const events: TelemetryEvent[] = [];
  for (let i = 0; i < 1000; i++) {
    const tags: Record<string, string> = {};
    const nt = Math.floor(r() * 6);
    for (let j = 0; j < nt; j++) tags[pick(words) + (r() < 0.3 ? String(j) : "")] = pick(words);
    const values: Record<string, number> = {};
    const nv = Math.floor(r() * 6);
    for (let j = 0; j < nv; j++) values[pick(words) + "_v" + (r() < 0.5 ? j : "")] = (r() - 0.5) * 10 ** Math.floor(r() * 12);
    events.push({
      id: `ev-${i}-${Math.floor(r() * 1e9).toString(36)}`,
      ts: r() < 0.05 ? Math.floor((r() - 0.5) * 2 * Number.MAX_SAFE_INTEGER) : now + Math.floor((r() - 0.5) * 600_000),
      source: pick(["robot-1", "robot-2", "svc-api"]),
      kind: pick(["status", "error", "perf"]),
      tags,
      values,
    });
  }
  assert.deepEqual(decodeEventBatch(encodeEventBatch(events)), events);
});

test("encode refuses a non-integer ts", () => {
  assert.throws(() => encodeEventBatch([{ ...sample[0], ts: 1.5 }]), /non-integer ts/);
  assert.throws(() => encodeEventBatch([{ ...sample[0], ts: NaN }]), /non-integer ts/);
});

test("decoding random garbage throws an Error, never anything else", () => {
  const r = rng(7);
  const valid = encodeEventBatch(sample);
  let threw = 0;
  for (let n = 0; n < 2000; n++) {
    let bytes: Uint8Array;
    if (n % 2 === 0) {
      bytes = new Uint8Array(Math.floor(r() * 200));
      for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(r() * 256);
    } else {
      // Mutate a valid batch: flip a few bytes, sometimes truncate.
      bytes = valid.slice(0, r() < 0.3 ? Math.floor(r() * valid.length) : valid.length);
      const flips = 1 + Math.floor(r() * 4);
      for (let f = 0; f < flips && bytes.length > 0; f++) bytes[Math.floor(r() * bytes.length)] = Math.floor(r() * 256);
    }
    try {
      const events = decodeEventBatch(bytes);
      // Some garbage happens to be a valid batch; the result must then be well formed.
      for (const e of events) {
        assert.equal(typeof e.id, "string");
        assert.ok(Number.isSafeInteger(e.ts));
      }
    } catch (err) {
      assert.ok(err instanceof Error, `threw a non-Error: ${String(err)}`);
      assert.match(err.message, /^EventBatch: /);
      threw++;
    }
  }
  assert.ok(threw > 500, `only ${threw} of 2000 garbage inputs were rejected`);
});

/** A valid 2-event batch, as a message to corrupt column by column. */
function validBatch(): EventBatch {
  return create(EventBatchSchema, {
    ids: ["a", "b"],
    ts: [1000n, 5n],
    sources: ["s", "s"],
    kinds: ["k", "k"],
    dict: ["site", "berlin", "lat"],
    tagCounts: [1, 0],
    tags: [0, 1],
    valueCounts: [0, 1],
    valueNames: [2],
    values: [1.5],
  });
}

function decodeMutated(mutate: (b: EventBatch) => void): TelemetryEvent[] {
  const b = validBatch();
  mutate(b);
  return decodeEventBatch(toBinary(EventBatchSchema, b));
}

test("the hand-built batch decodes", () => {
  assert.deepEqual(decodeMutated(() => {}), [
    { id: "a", ts: 1000, source: "s", kind: "k", tags: { site: "berlin" }, values: {} },
    { id: "b", ts: 1005, source: "s", kind: "k", tags: {}, values: { lat: 1.5 } },
  ]);
});

test("inconsistent column lengths throw", () => {
  const cases: Array<[string, (b: EventBatch) => void, RegExp]> = [
    ["ts short", (b) => b.ts.pop(), /column ts has 1 entries, expected 2/],
    ["ts long", (b) => b.ts.push(1n), /column ts/],
    ["sources short", (b) => b.sources.pop(), /column sources/],
    ["kinds long", (b) => b.kinds.push("x"), /column kinds/],
    ["tag_counts short", (b) => b.tagCounts.pop(), /column tag_counts/],
    ["value_counts long", (b) => b.valueCounts.push(0), /column value_counts/],
    ["tag_counts too big", (b) => (b.tagCounts[1] = 1), /tag_counts\[1\]/],
    ["tag_counts huge", (b) => (b.tagCounts[0] = 0xffffffff), /tag_counts\[0\]/],
    ["tags left over", (b) => b.tags.push(0, 1), /column tags has 4 entries, expected 2/],
    ["tags odd", (b) => b.tags.push(0), /column tags/],
    ["value_counts too big", (b) => (b.valueCounts[1] = 2), /value_counts\[1\]/],
    ["value_names left over", (b) => (b.valueNames.push(0), b.values.push(2)), /column value_names/],
    ["values short", (b) => b.values.pop(), /column values/],
    ["sources empty, no subject", (b) => (b.sources = []), /sources is empty/],
  ];
  for (const [name, mutate, msg] of cases) {
    assert.throws(() => decodeMutated(mutate), msg, name);
  }
});

test("bad dictionary indices, duplicate keys and out-of-range ts throw", () => {
  assert.throws(() => decodeMutated((b) => (b.tags[1] = 3)), /tags\[1\] = 3 is outside the dictionary \(size 3\)/);
  assert.throws(() => decodeMutated((b) => (b.valueNames[0] = 99)), /value_names\[0\] = 99/);
  assert.throws(
    () => decodeMutated((b) => ((b.tagCounts = [2, 0]), (b.tags = [0, 1, 0, 2]))),
    /tag "site" twice/,
  );
  assert.throws(() => decodeMutated((b) => (b.ts[0] = 1n << 60n)), /ts of event 0 .*safe-integer/);
  assert.throws(
    () => decodeMutated((b) => (b.ts = [BigInt(Number.MAX_SAFE_INTEGER), 1n])),
    /ts of event 1 .*safe-integer/,
  );
});

test("empty sources/kinds columns take the subject's", () => {
  const events = decodeEventBatch(
    toBinary(EventBatchSchema, Object.assign(validBatch(), { sources: [], kinds: [] })),
    { source: "robot-9", kind: "perf" },
  );
  assert.deepEqual(events.map((e) => [e.source, e.kind]), [["robot-9", "perf"], ["robot-9", "perf"]]);
});

test("the hand-written reader reads what protobuf-es reads: random batches, every column", () => {
  const r = rng(11);
  const pick = <T>(xs: T[]) => xs[Math.floor(r() * xs.length)]!;
  const words = ["a", "site", "berlin", "ünïcødé 🚀", "", "x".repeat(300)];
  const bigs = [0n, 1n, -1n, 127n, -64n, 1n << 31n, -(1n << 31n), 1n << 52n, (1n << 53n) - 1n, 1n << 53n, -(1n << 53n), (1n << 63n) - 1n, -(1n << 63n)];
  for (let n = 0; n < 300; n++) {
    const count = Math.floor(r() * 20);
    const batch = create(EventBatchSchema, {
      ids: Array.from({ length: count }, (_, i) => `${pick(words)}${i}`),
      ts: Array.from({ length: count }, () => (r() < 0.3 ? pick(bigs) : BigInt(Math.floor((r() - 0.5) * 2 ** 45)))),
      sources: Array.from({ length: count }, () => pick(words)),
      kinds: r() < 0.5 ? [] : Array.from({ length: count }, () => pick(words)),
      dict: words,
      tagCounts: Array.from({ length: count }, () => Math.floor(r() * 3)),
      tags: Array.from({ length: Math.floor(r() * 10) }, () => (r() < 0.1 ? 0xffffffff : Math.floor(r() * 1000))),
      valueCounts: Array.from({ length: count }, () => Math.floor(r() * 2)),
      valueNames: Array.from({ length: Math.floor(r() * 5) }, () => Math.floor(r() * 6)),
      values: Array.from({ length: Math.floor(r() * 5) }, () => pick([0, -0, 1.5, -1e308, 5e-324, Infinity, NaN, r()])),
    });
    const read = readEventBatch(toBinary(EventBatchSchema, batch));
    const { $typeName, ...columns } = batch;
    assert.deepEqual({ ...read, ts: read.ts.map((t) => BigInt(t)) }, columns, `batch ${n}`);
    for (const t of read.ts) assert.ok(typeof t === "bigint" || Number.isSafeInteger(t) || Math.abs(t) === 2 ** 53, "a number only when exact");
  }
});

test("the reader takes unpacked repeated fields and skips unknown ones, as proto3 parsers must", () => {
  // ids "a" (field 1), ts 1000 unpacked (field 2, varint, zigzag 2000), an unknown field 15 of each
  // wire type, tag_counts 0 unpacked (field 6), value_counts 1 (field 8), value_names 0 (field 9),
  // values 2.5 unpacked (field 10, fixed64), dict "v" (field 5), sources "s", kinds "k".
  const double = Buffer.alloc(8);
  double.writeDoubleLE(2.5);
  const bytes = Buffer.concat([
    Buffer.from([0x0a, 1, 0x61]),
    Buffer.from([0x10, 0xd0, 0x0f]),
    Buffer.from([0x78, 0x05, 0x79, 1, 2, 3, 4, 5, 6, 7, 8, 0x7a, 2, 9, 9, 0x7d, 1, 2, 3, 4]),
    Buffer.from([0x30, 0, 0x40, 1, 0x48, 0]),
    Buffer.from([0x51]),
    double,
    Buffer.from([0x2a, 1, 0x76, 0x1a, 1, 0x73, 0x22, 1, 0x6b]),
  ]);
  assert.deepEqual(decodeEventBatch(bytes), [{ id: "a", ts: 1000, source: "s", kind: "k", tags: {}, values: { v: 2.5 } }]);
  assert.throws(() => decodeEventBatch(Buffer.from([0x7b])), /^Error: EventBatch: invalid protobuf: unsupported wire type 3/);
  assert.throws(() => decodeEventBatch(Buffer.from([0x0a, 5, 0x61])), /runs past the end/);
});

test("a router's columns hold what the event objects hold, and an id fingerprints the same from protobuf bytes as from a JSON string", () => {
  const r = rng(11);
  const ids = ["a", "robot-7:42", "ünïcødé-✓", "x".repeat(40), "__proto__"];
  const words = ["site", "berlin", "münchen", "code", "E1", "__proto__", "v", "w"];
  const pick = <T>(list: readonly T[]) => list[Math.floor(r() * list.length)]!;
  for (let round = 0; round < 50; round++) {
    const events: TelemetryEvent[] = Array.from({ length: 1 + Math.floor(r() * 30) }, (_, i) => {
      const tags: Record<string, string> = {};
      const values: Record<string, number> = {};
      for (let t = Math.floor(r() * 4); t > 0; t--) Object.defineProperty(tags, pick(words), { value: pick(words), enumerable: true, writable: true, configurable: true });
      for (let v = Math.floor(r() * 3); v > 0; v--) Object.defineProperty(values, pick(words), { value: r() * 100, enumerable: true, writable: true, configurable: true });
      return { id: `${pick(ids)}-${round}-${i}`, ts: 1_700_000_000_000 + Math.floor(r() * 1e6) - 5e5, source: pick(["r1", "röbot", "r2"]), kind: pick(["status", "error"]), tags, values };
    });
    const bytes = encodeEventBatch(events);
    const fromBytes = new EventColumns();
    appendEventBatch(fromBytes, bytes, fromBytes.addMessage(bytes, "", ""), undefined, 5);
    const fromObjects = new EventColumns();
    for (const e of events) fromObjects.appendEvent(e, 5);
    assert.equal(fromBytes.length, events.length);
    for (let i = 0; i < events.length; i++) {
      assert.deepEqual(fromBytes.event(i), events[i]);
      assert.deepEqual([...fromBytes.fingerprint.subarray(3 * i, 3 * i + 3)], [...fromObjects.fingerprint.subarray(3 * i, 3 * i + 3)], `fingerprint of ${events[i]!.id}`);
      assert.equal(fromBytes.source(i), events[i]!.source);
      assert.equal(fromBytes.kinds[fromBytes.kind[i]!], events[i]!.kind);
      for (const [key, value] of Object.entries(events[i]!.tags)) assert.equal(fromBytes.dict[fromBytes.tagOf(i, fromBytes.lookup(key))], value);
      for (const [name, value] of Object.entries(events[i]!.values)) assert.equal(fromBytes.valueOf(i, fromBytes.lookup(name)), value);
    }
  }
  const utf8 = new TextEncoder();
  for (const id of ids) {
    const b = utf8.encode(id);
    assert.deepEqual([...idFingerprintOfBytes(b, 0, b.length)], [...idFingerprint(id)], id);
  }
});

test("decoding into columns refuses and accepts exactly what decoding into objects does", () => {
  const r = rng(13);
  const now = 1_700_000_000_000;
  const limits = { ...defaultLimits, maxTags: 2, maxValues: 1, maxFutureMs: 1000 };
  const columns = new EventColumns();
  for (let round = 0; round < 300; round++) {
    const events: TelemetryEvent[] = Array.from({ length: Math.floor(r() * 6) }, (_, i) => ({
      id: r() < 0.1 ? "" : `e${round}-${i}`,
      ts: now + (r() < 0.2 ? 5000 : -Math.floor(r() * 1000)),
      source: "s",
      kind: "k",
      tags: Object.fromEntries(Array.from({ length: Math.floor(r() * 4) }, (_, t) => [`t${t}`, `v${t}`])),
      values: Object.fromEntries(Array.from({ length: Math.floor(r() * 3) }, (_, v) => [`n${v}`, r() < 0.1 ? Infinity : r()])),
    }));
    let bytes: Uint8Array;
    try {
      bytes = encodeEventBatch(events);
    } catch {
      continue;
    }
    if (round % 3 === 0 && bytes.length > 0) bytes[Math.floor(r() * bytes.length)] = Math.floor(r() * 256);
    const objects = decodePayload(bytes, "s", "k", true, now, limits);
    columns.reset();
    const admitted: number[] = [];
    const rejects = decodePayloadInto(columns, columns.addMessage(bytes, "s", "k"), 1, true, now, limits, { admit: (row) => (admitted.push(row), row % 4 !== 3) });
    assert.deepEqual(rejects.map((x) => [x.reason, x.detail, Buffer.from(x.raw).toString("hex")]), objects.rejects.map((x) => [x.reason, x.detail, Buffer.from(x.raw).toString("hex")]));
    assert.equal(admitted.length, objects.events.length, "every valid event is offered to admit");
    const kept = objects.events.filter((_, i) => i % 4 !== 3);
    assert.deepEqual(Array.from({ length: columns.length }, (_, i) => columns.event(i)), kept);
  }
});

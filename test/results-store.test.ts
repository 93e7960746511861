import assert from "node:assert/strict";
import { test } from "node:test";
import type { WindowResult } from "../actors/window-result.js";
import { finalBatches, resultTexts } from "../node/final-batches.js";
import { resultsOf } from "../node/provisional-batcher.js";
import { ResultsStore } from "../node/results-store.js";
import { RocksStateStore } from "../runtime/state-store.js";
import { prng } from "./expected.js";
import { tempDir } from "./harness.js";

const t0 = Date.UTC(2026, 10, 24, 10);

/** A stream of results as shards would publish them: provisional growth, finals, corrections, redeliveries, a stale owner. */
function resultStream(seed: number, n: number): WindowResult[] {
  const random = prng(seed);
  const out: WindowResult[] = [];
  const revisions = new Map<string, { revision: number; events: number }>();
  for (let i = 0; i < n; i++) {
    const robot = `r${Math.floor(random() * 6)}`;
    const start = t0 + 60_000 * Math.floor(random() * 3);
    const key = `${robot}@${start}`;
    const now = revisions.get(key) ?? { revision: 0, events: 0 };
    now.events += 1 + Math.floor(random() * 5);
    if (random() < 0.3) now.revision++;
    revisions.set(key, now);
    const shard = Math.floor(random() * 2);
    const result: WindowResult = {
      key,
      metric: "m",
      window: "1m",
      start,
      end: start + 60_000,
      dims: { robot },
      status: now.revision === 0 ? "provisional" : now.revision === 1 ? "final" : "corrected",
      revision: now.revision,
      eventCount: now.events,
      lateCount: 0,
      watermark: start,
      values: { count: now.events },
      shard,
      // Shard 1 changes owner at i = n/2; its old owner goes on publishing for a while (stale).
      epoch: shard === 1 && i > n / 2 && random() < 0.7 ? 20 : 10,
    };
    out.push(result);
    if (random() < 0.15) out.push(structuredClone(out[Math.floor(random() * out.length)]!)); // a redelivery, old or new
  }
  return out;
}

test("putAll stores, result by result, exactly what one put after another stores", async () => {
  const dirs = [tempDir(), tempDir()];
  const [one, batched] = await Promise.all(dirs.map((d) => RocksStateStore.open(d.path)));
  try {
    const a = new ResultsStore(one!);
    const b = new ResultsStore(batched!);
    const stream = resultStream(7, 400);
    const sequential: boolean[] = [];
    for (const r of stream) sequential.push(await a.put(r));
    const inBatches: boolean[] = [];
    for (let i = 0; i < stream.length; i += 37) inBatches.push(...(await b.putAll(stream.slice(i, i + 37))));
    assert.deepEqual(inBatches, sequential);
    assert.ok(sequential.some((s) => !s) && sequential.some((s) => s), "the stream has both stored and refused results");
    const query = { metric: "m", window: "1m", from: t0, to: t0 + 10 * 60_000, where: {} };
    assert.deepEqual(await b.query(query), await a.query(query));
    // Refused for a stale epoch: shard 1 at epoch 10 after epoch 20 was seen.
    const stale = stream.filter((r) => r.shard === 1 && r.epoch === 10).at(-1)!;
    assert.deepEqual(await b.putAll([{ ...stale, revision: 99 }]), [false]);
  } finally {
    for (const s of [one, batched]) await s?.close();
    for (const d of dirs) d.remove();
  }
});

test("finals in batches are stored and served exactly; the same finals again, batched differently (a replay), change nothing", async () => {
  const dir = tempDir();
  const store = await RocksStateStore.open(dir.path);
  try {
    const results = new ResultsStore(store);
    const final = (i: number, over: Partial<WindowResult> = {}): WindowResult => ({
      key: `devices|1m|${t0}|d${i}`,
      metric: "devices",
      window: "1m",
      start: t0,
      end: t0 + 60_000,
      dims: { device: `d${String(i).padStart(4, "0")}` },
      status: "final",
      revision: 1,
      eventCount: i + 1,
      lateCount: 0,
      watermark: t0 + 65_000,
      values: { count: i + 1 },
      shard: 3,
      epoch: 10,
      ...over,
    });
    const finals = Array.from({ length: 1000 }, (_, i) => final(i));
    const batches = finalBatches(finals, (r) => `results.${r.metric}.${r.window}`, 32 * 1024);
    assert.ok(batches.length > 1 && batches.length < 20, `${batches.length} messages for 1000 finals`);
    assert.ok(batches.every((b) => b.body.length <= 32 * 1024 && b.subject === "results.devices.1m"));
    const parsed = batches.flatMap((b) => resultsOf(b.body));
    assert.deepEqual(parsed, finals, "every final, in order, as emitted");
    // Cut into their own texts without a parse of the whole: each stored as it came.
    const cut = batches.map((b, i) => (i % 2 === 0 ? resultTexts(Buffer.from(b.body)) : resultTexts(Buffer.from(b.body), b.body)));
    assert.deepEqual(cut.flatMap((c) => c.results), finals);
    assert.deepEqual(cut.flatMap((c) => c.texts!.map((t) => Buffer.from(t).toString())), finals.map((r) => JSON.stringify(r)));
    assert.deepEqual(new Set(await results.putAllDetailed(cut.flatMap((c) => c.results), cut.flatMap((c) => c.texts!))), new Set(["stored"]));
    const q = { metric: "devices", window: "1m", from: t0, to: t0 + 60_000, where: {} };
    const served = await results.query(q);
    assert.deepEqual(served.map((r) => [r.dims.device, r.revision, r.values.count]), finals.map((r) => [r.dims.device, 1, r.values.count]));

    // A replay re-emits the same (window, revision) in other batches (another message id), even
    // from a new owner, and a rollup's intermediate revision may even differ: the first one stays.
    const again = [...finals].reverse().map((r, i) => (i % 2 === 0 ? { ...r, epoch: 11 } : { ...r, epoch: 11, values: { count: 999 }, eventCount: 999 }));
    const rebatched = finalBatches(again, (r) => `results.${r.metric}.${r.window}`, 8 * 1024);
    assert.notDeepEqual(rebatched.map((b) => b.id), batches.map((b) => b.id));
    const outcomes = await results.putAllDetailed(rebatched.flatMap((b) => resultsOf(b.body)));
    assert.deepEqual(new Set(outcomes), new Set(["duplicate"]), "nothing stored again, nothing for subscribers");
    assert.deepEqual(await results.query(q), served);

    // A correction (revision 2) still replaces the final, and its re-emission is a duplicate too.
    const corrected = final(7, { status: "corrected", revision: 2, eventCount: 50, values: { count: 50 }, epoch: 11 });
    assert.deepEqual(await results.putAllDetailed([corrected, { ...corrected }, final(7, { epoch: 11 })]), ["stored", "duplicate", "older"]);
    assert.equal((await results.query(q)).find((r) => r.key === corrected.key)!.values.count, 50);

    // Identical batches get identical ids (JetStream drops the second within its duplicate window).
    assert.deepEqual(finalBatches(finals, (r) => `results.${r.metric}.${r.window}`, 32 * 1024).map((b) => b.id), batches.map((b) => b.id));
  } finally {
    await store.close();
    dir.remove();
  }
});

test("a results message is cut into its results' own texts only where every piece is one of them", () => {
  const text = (s: string) => {
    const cut = resultTexts(Buffer.from(s));
    assert.deepEqual(resultTexts(Buffer.from(s), s), cut, "the same from the message's text");
    return cut;
  };
  const a = { key: "a", status: "final", values: { top: [{ k: "x" }, { k: "y" }] } };
  const b = { key: "b", status: "final", values: {} };
  assert.deepEqual(text(`[${JSON.stringify(a)},\n${JSON.stringify(b)}]`), { results: [a, b], texts: [Buffer.from(JSON.stringify(a)), Buffer.from(JSON.stringify(b))] });
  // A ",\n" inside a result (another writer's layout) leaves a piece that is no JSON: parsed whole, no texts.
  const pretty = JSON.stringify([a, b], null, 1);
  assert.deepEqual(text(pretty), { results: [a, b] });
  assert.deepEqual(text(`[{"key":"a","v":[1,\n2]},\n{"key":"b"}]`), { results: [{ key: "a", v: [1, 2] }, { key: "b" }] });
  // One result alone (as older versions publish finals), and an array without newlines (older batches).
  assert.deepEqual(text(JSON.stringify(a)), { results: [a] });
  assert.deepEqual(text(`[${JSON.stringify(a)},${JSON.stringify(b)}]`), { results: [a, b] });
  assert.throws(() => text(`[${JSON.stringify(a)},\n{"key":`), SyntaxError, "not JSON at all: as JSON.parse");
  // Not ASCII: cut by bytes all the same.
  const c = { key: "c", status: "final", dims: { site: "Zürich ✓" } };
  assert.deepEqual(text(`[${JSON.stringify(c)},\n${JSON.stringify(b)}]`), { results: [c, b], texts: [Buffer.from(JSON.stringify(c)), Buffer.from(JSON.stringify(b))] });
});

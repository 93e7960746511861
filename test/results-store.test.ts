import assert from "node:assert/strict";
import { test } from "node:test";
import type { WindowResult } from "../actors/window-result.js";
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

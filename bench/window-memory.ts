// Memory cost of an active count window: heap and RSS bytes per window, in-process, with the real
// window code (ActorSystem + window actors + WindowShard) on a real RocksDB, fed router partials
// that went through the mailbox encoding, as a hosted shard receives them.
// Run: npx tsc -p tsconfig.json && node --expose-gc dist/bench/window-memory.js [windows] [partials per window] [--actors] [--cut-every N]
// (wrap in `flock /tmp/tally-cpu.lock` on a shared machine).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getHeapStatistics } from "node:v8";
import { Router } from "../actors/router.js";
import { parseRules } from "../actors/rules.js";
import type { TelemetryEvent } from "../actors/event.js";
import { windowActorKind, type WindowMessage } from "../actors/window-actor.js";
import type { WindowResult } from "../actors/window-result.js";
import { WindowShard } from "../actors/window-shard.js";
import { decodeMailbox, encodeMailbox } from "../node/mailbox-codec.js";
import { ActorSystem } from "../runtime/actor-system.js";
import { RocksStateStore } from "../runtime/state-store.js";

const windows = Number(process.argv[2] ?? 200_000);
const rounds = Number(process.argv[3] ?? 2);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with --expose-gc");

// The high-cardinality scenario's rule (bench/scenarios/high-cardinality.ts).
const [rule] = parseRules(`{"metrics": [{"name": "devices", "kind": "status", "groupBy": ["device"], "aggregates": ["count"], "window": "1m", "lateness": "5s"}]}`);
const dir = mkdtempSync(join(tmpdir(), "window-memory-"));
const store = await RocksStateStore.open(dir);
let results = 0;
const env = { rule: () => rule, emit: (_r: WindowResult) => void results++, emitIntervalMs: 250, now: Date.now };
const actors = new ActorSystem<WindowMessage>(
  windowActorKind(env),
  store,
  { idleMs: 60_000, prefix: "shard/0/actor/" },
);
// As a node hosts them: open windows of a plain rule in the shard's table (`--actors`: an actor each, as before the table).
const actorsOnly = process.argv.includes("--actors");
// `--cut-every N`: a checkpoint after every N batches of 10k windows (a node cuts each shard every
// second); 0: none; default: one per round, all windows in one RocksDB write (RocksDB then holds
// ~0.5 GiB more native memory at 1M windows than with cuts of 10k: the memory is the batch's).
const cutAt = process.argv.indexOf("--cut-every");
const cutEvery = cutAt > 0 ? Number(process.argv[cutAt + 1]) : undefined;
const shard = new WindowShard(0, actors, () => rule!, actorsOnly ? {} : { table: env });
const router = new Router([rule!], 1);

const start = Math.floor(Date.now() / 60_000) * 60_000;
const batch = 10_000;
let seq = 0;

async function feed(round: number): Promise<void> {
  for (let from = 0; from < windows; from += batch) {
    const events: TelemetryEvent[] = [];
    for (let i = from; i < Math.min(windows, from + batch); i++) {
      const device = `dev-${String(i).padStart(7, "0")}`;
      events.push({ id: `${device}-${round}`, ts: start + 1_000 + round, source: device, kind: "status", tags: { device }, values: {} });
    }
    const routed = router.route(events);
    const partials = routed.byShard.get(0) ?? [];
    const message = decodeMailbox(encodeMailbox({ type: "partials", partition: 0, first: seq + 1, last: seq + events.length, partials }));
    seq += events.length;
    if (message.type === "partials") shard.applyBatch("0", message.last, message.partials);
    await actors.idle();
    if (cutEvery !== undefined && cutEvery > 0 && (from / batch) % cutEvery === cutEvery - 1) await actors.checkpoint();
  }
  // A watermark inside the window: it stays open (active), as under load.
  await shard.mark(0, { watermark: start + 2_000, idle: false });
  if (cutEvery !== 0) await actors.checkpoint();
}

async function settle(): Promise<{ heap: number; rss: number; heapTotal: number; external: number; malloced: number }> {
  for (let i = 0; i < 3; i++) {
    await new Promise((r) => setTimeout(r, 50));
    gc!();
  }
  const m = process.memoryUsage();
  return { heap: m.heapUsed, rss: m.rss, heapTotal: m.heapTotal, external: m.external, malloced: getHeapStatistics().malloced_memory };
}

const before = await settle();
const t0 = Date.now();
for (let round = 0; round < rounds; round++) await feed(round);
const after = await settle();
const report = {
  windows,
  active: shard.activeWindows,
  as: actorsOnly ? "actors" : "table rows",
  partialsPerWindow: rounds,
  results,
  heapBytesPerWindow: Math.round((after.heap - before.heap) / windows),
  rssBytesPerWindow: Math.round((after.rss - before.rss) / windows),
  heapMiB: Math.round((after.heap - before.heap) / 2 ** 20),
  rssMiB: Math.round((after.rss - before.rss) / 2 ** 20),
  // Where the RSS growth is, besides the heap in use: V8's committed heap, buffers outside it
  // (the table's columns), V8's own malloc'd memory; the rest is native (RocksDB, allocator).
  heapCommittedMiB: Math.round((after.heapTotal - before.heapTotal) / 2 ** 20),
  externalMiB: Math.round((after.external - before.external) / 2 ** 20),
  v8MallocedMiB: Math.round((after.malloced - before.malloced) / 2 ** 20),
  seconds: (Date.now() - t0) / 1000,
};
console.log(JSON.stringify(report));
if (process.env.HEAP_SNAPSHOT) {
  const { writeHeapSnapshot } = await import("node:v8");
  console.log("heap snapshot:", writeHeapSnapshot(process.env.HEAP_SNAPSHOT));
}
actors.reset();
await store.close();
rmSync(dir, { recursive: true, force: true });
process.exit(0);

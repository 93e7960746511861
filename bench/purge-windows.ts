// Purging passivated count windows at their horizon, in-process, with the real window code
// (WindowShard with its table, ActorSystem, window actors) on a real RocksDB: the time the purging
// watermark step takes until every actor is idle, the checkpoint that writes the deletes, and the
// store reads. Each window is purged unread (`ActorSystem.forget`, the default) or through its
// actor (`purgeByMessage`, as before: an activation and a RocksDB read each), in the same run,
// twice each in alternation, each on a fresh store.
// Run: npx tsc -p tsconfig.json && flock /tmp/tally-cpu.lock node --expose-gc dist/bench/purge-windows.js [windows]
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseRules } from "../actors/rules.js";
import { windowActorKind, type WindowMessage } from "../actors/window-actor.js";
import { purgeMarginMs, WindowShard } from "../actors/window-shard.js";
import { ActorSystem } from "../runtime/actor-system.js";
import { RocksStateStore } from "../runtime/state-store.js";
import { openDeviceWindows } from "./device-windows.js";

const windows = Number(process.argv[2] ?? 200_000);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with --expose-gc");

// The high-cardinality scenario's rule (bench/scenarios/high-cardinality.ts), default horizon.
const [rule] = parseRules(`{"metrics": [{"name": "devices", "kind": "status", "groupBy": ["device"], "aggregates": ["count"], "window": "1m", "lateness": "5s"}]}`);

interface Run {
  mode: "unread" | "by message";
  purgeMs: number;
  checkpointMs: number;
  reads: number;
  left: number;
}

async function run(purgeByMessage: boolean): Promise<Run> {
  const dir = mkdtempSync(join(tmpdir(), "purge-windows-"));
  const store = await RocksStateStore.open(dir);
  let reads = 0;
  const counted = Object.assign(Object.create(store) as RocksStateStore, {
    get: (key: string) => {
      reads++;
      return store.get(key);
    },
    getMany: (keys: readonly string[]) => {
      reads += keys.length;
      return store.getMany(keys);
    },
  });
  const env = { rule: () => rule, emit: () => undefined, emitIntervalMs: 250, now: Date.now };
  const actors = new ActorSystem<WindowMessage>(windowActorKind(env), counted, { idleMs: 60_000, prefix: "shard/0/actor/" });
  // As a node hosts them: open windows in the shard's table, final ones handed to the actor system passivated.
  const shard = new WindowShard(0, actors, () => rule!, { table: env, purgeByMessage });
  const start = Math.floor(Date.now() / 60_000) * 60_000;
  openDeviceWindows(shard, rule!, windows, start);
  // Final: each window's state waits passivated for the checkpoint, which writes it.
  const closed = start + 60_000 + rule!.latenessMs;
  await shard.mark(0, { watermark: closed, idle: false });
  await actors.checkpoint();
  if (actors.activeCount !== 0) throw new Error(`${actors.activeCount} windows still active`);
  for (let i = 0; i < 3; i++) gc!();

  reads = 0;
  const t0 = performance.now();
  await shard.mark(0, { watermark: closed + rule!.horizonMs + purgeMarginMs, idle: false });
  await actors.idle();
  const t1 = performance.now();
  await actors.checkpoint();
  const t2 = performance.now();
  let left = 0;
  for await (const _ of store.scan("shard/0/actor/", "shard/0/actor/\uffff")) left++;
  actors.reset();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
  return { mode: purgeByMessage ? "by message" : "unread", purgeMs: Math.round(t1 - t0), checkpointMs: Math.round(t2 - t1), reads, left };
}

const runs: Run[] = [];
for (const byMessage of [true, false, true, false]) runs.push(await run(byMessage));
const best = (mode: Run["mode"]) => Math.min(...runs.filter((r) => r.mode === mode).map((r) => r.purgeMs + r.checkpointMs));
console.log(JSON.stringify({ windows, runs, ratio: Math.round((best("by message") / best("unread")) * 10) / 10 }));
process.exit(0);

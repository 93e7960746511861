// The node's work per window when a minute of many count windows closes, in-process, with the real
// code and no NATS: a HostedShard's window shard with N open rows (the high-cardinality rule), then
// the watermark step that fires them all, in three phases timed apart:
//   fire:  `WindowShard.mark` (sliced, as a node runs it), each final through `HostedShard.emitEncoded`,
//          the sink's `emitted` (the provisional batcher's `supersede`) and the node's final batches
//          (`finalBatches`, the JSON bodies a node publishes, encoded as its publish does; not sent);
//   cut:   the next checkpoint: `ActorSystem.cut`, the state log's chunks (`ChunkPacker`, as the
//          shard's state writer packs them; not sent) and the RocksDB write;
//   store: the results consumer's side of those bodies (`TallyNode.storeResults`): parsed 5,000
//          results at a time, `ResultsStore.putAllDetailed` into RocksDB, `LiveResults.settle`.
// Reports µs per window per phase (best of `rounds`, each on fresh state).
// Run: npx tsc -p tsconfig.json && flock /tmp/tally-cpu.lock node --expose-gc dist/bench/close-windows.js [windows] [rounds]
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseRules } from "../actors/rules.js";
import type { WindowResult } from "../actors/window-result.js";
import type { WindowShard } from "../actors/window-shard.js";
import * as batches from "../node/final-batches.js";
import { finalBatches, mayHoldFinals } from "../node/final-batches.js";
import { HostedShard } from "../node/hosted-shard.js";
import { LiveResults, liveResultsDefaults } from "../node/live-results.js";
import { ProvisionalBatcher } from "../node/provisional-batcher.js";
import { ResultsStore } from "../node/results-store.js";
import { ChunkPacker } from "../node/shard-state-records.js";
import type { ShardStateLog } from "../node/shard-state-log.js";
import { subjects } from "../node/streams.js";
import { RocksStateStore } from "../runtime/state-store.js";
import { openDeviceWindows } from "./device-windows.js";

const windows = Number(process.argv[2] ?? 200_000);
const rounds = Number(process.argv[3] ?? 3);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with --expose-gc");

// The high-cardinality scenario's rule (bench/scenarios/high-cardinality.ts).
const [rule] = parseRules(`{"metrics": [{"name": "devices", "kind": "status", "groupBy": ["device"], "aggregates": ["count"], "window": "1m", "lateness": "5s"}]}`);
// As tally-node.ts sets them.
const finalBatchChars = 32 * 1024;
const storeSlice = 5_000;

interface Round {
  fireUs: number;
  cutUs: number;
  storeUs: number;
  /** The process's CPU (user + system, all its threads: GC, RocksDB's) per window, per phase. */
  fireCpuUs: number;
  cutCpuUs: number;
  storeCpuUs: number;
  messages: number;
  bytes: number;
  stored: number;
}

async function round(): Promise<Round> {
  const dir = mkdtempSync(join(tmpdir(), "close-windows-"));
  const store = await RocksStateStore.open(dir);
  const bodies: { data: Buffer; results: number }[] = [];
  const provisional = new ProvisionalBatcher({ flushMs: 50, maxBytes: 32 * 1024, subjectOf: (r) => subjects.results(r.metric, r.window), publish: () => undefined });
  const hosted = new HostedShard(
    0,
    1,
    {
      js: undefined as never,
      jsm: undefined as never,
      store,
      stateLog: undefined as unknown as ShardStateLog,
      shardCount: 1,
      ruleOf: () => rule,
      // As TallyNode's sink: `emitted` (a final supersedes its window's waiting provisional result), `publishFinals` (not sent).
      sink: {
        emitted: (result: WindowResult) => {
          if (result.status !== "provisional") provisional.supersede(result);
        },
        finals: (results: WindowResult[]) => {
          // Encoded at once, as the publish does: the string is garbage after it.
          for (const batch of finalBatches(results, (r) => subjects.results(r.metric, r.window), finalBatchChars)) {
            bodies.push({ data: Buffer.from(batch.body), results: batch.results });
          }
          return Promise.resolve();
        },
      },
      onFenced: () => undefined,
      log: () => undefined,
    },
    { emitIntervalMs: 250, actorIdleMs: 60_000, checkpointIntervalMs: 1_000, maxBatch: 1_000, compactAfterBytes: 64 * 2 ** 20 },
  );
  const shard = (hosted as unknown as { window: WindowShard }).window;
  const start = Math.floor(Date.now() / 60_000) * 60_000 - 10 * 60_000;
  openDeviceWindows(shard, rule!, windows, start);
  // The rows' open states checkpointed, as a node's cuts would have by the close.
  await hosted.actors.cut().write();
  if (shard.activeWindows !== windows) throw new Error(`${shard.activeWindows} open windows, not ${windows}`);
  for (let i = 0; i < 3; i++) gc!();

  // fire: until the last final batch is built (the shard hands its last finals over at the next turn).
  const marks = [process.hrtime.bigint()];
  const cpu = [process.cpuUsage()];
  const t0 = performance.now();
  if (process.env.CLOSE_PHASES) console.log(`phase fire`);
  await shard.mark(0, { watermark: start + 60_000 + rule!.latenessMs, idle: false });
  await new Promise((resolve) => setImmediate(resolve));
  const t1 = performance.now();
  if (process.env.CLOSE_PHASES) console.log(`phase cut`);
  marks.push(process.hrtime.bigint());
  cpu.push(process.cpuUsage());
  const fired = bodies.reduce((n, b) => n + b.results, 0);
  if (fired !== windows) throw new Error(`${fired} finals, not ${windows}`);

  // cut: the checkpoint after the close, its state log records packed, written to RocksDB.
  const cut = hosted.actors.cut();
  const packer = new ChunkPacker(64);
  const chunks: Uint8Array[] = [];
  for (const [key, value] of cut.changes.puts) packer.check(key, value);
  for (const [key, value] of cut.changes.puts) {
    const chunk = packer.add(key, value);
    if (chunk) chunks.push(chunk);
  }
  for (const key of cut.changes.deletes) packer.add(key, null);
  chunks.push(packer.take());
  await cut.write();
  const t2 = performance.now();
  if (process.env.CLOSE_PHASES) console.log(`phase store`);
  marks.push(process.hrtime.bigint());
  cpu.push(process.cpuUsage());

  // store: the results consumer on every node.
  const results = new ResultsStore(store);
  const live = new LiveResults({ ...liveResultsDefaults, closesAt: (r) => r.end + rule!.latenessMs });
  let stored = 0;
  const storeItems = async (items: WindowResult[], texts: (Uint8Array | undefined)[]) => {
    const outcomes = await results.putAllDetailed(items, texts);
    const now = Date.now();
    items.forEach((item, i) => {
      if (outcomes[i] === "stale") return;
      live.settle(item, now);
      if (outcomes[i] === "stored") stored++;
    });
  };
  let items: WindowResult[] = [];
  let texts: (Uint8Array | undefined)[] = [];
  for (const batch of bodies) {
    const data = batch.data;
    const text = new TextDecoder().decode(data); // (m.string(), as the node reads it to test for finals)
    if (!mayHoldFinals(text)) throw new Error("a batch of finals without finals");
    // (So that this file also runs on the code before `resultTexts`, for an A/B: the whole parsed, no texts.)
    const parsed = "resultTexts" in batches ? (batches as { resultTexts: (d: Uint8Array, text: string) => { results: WindowResult[]; texts?: Uint8Array[] } }).resultTexts(data, text) : { results: JSON.parse(text) as WindowResult[], texts: undefined };
    parsed.results.forEach((result, i) => {
      items.push(result);
      texts.push(parsed.texts?.[i]);
    });
    if (items.length >= storeSlice) {
      await storeItems(items, texts);
      items = [];
      texts = [];
    }
  }
  if (items.length > 0) await storeItems(items, texts);
  const t3 = performance.now();
  if (process.env.CLOSE_PHASES) console.log(`phase end`);
  marks.push(process.hrtime.bigint());
  cpu.push(process.cpuUsage());
  if (stored !== windows) throw new Error(`${stored} stored, not ${windows}`);

  hosted.actors.reset();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
  // Phase bounds on the monotonic clock (µs), to slice a `--cpu-prof` profile by phase.
  if (process.env.CLOSE_PHASES) console.error(JSON.stringify({ phases: marks.map((t) => Number(t / 1000n)) }));
  const per = (ms: number) => Math.round((ms * 1000 * 100) / windows) / 100;
  const cpuMs = (i: number) => (cpu[i + 1]!.user + cpu[i + 1]!.system - cpu[i]!.user - cpu[i]!.system) / 1000;
  return {
    fireUs: per(t1 - t0),
    cutUs: per(t2 - t1),
    storeUs: per(t3 - t2),
    fireCpuUs: per(cpuMs(0)),
    cutCpuUs: per(cpuMs(1)),
    storeCpuUs: per(cpuMs(2)),
    messages: bodies.length,
    bytes: bodies.reduce((n, b) => n + b.data.length, 0),
    stored,
  };
}

const runs: Round[] = [];
for (let i = 0; i < rounds; i++) {
  runs.push(await round());
  gc!();
}
const best = (f: (r: Round) => number) => Math.min(...runs.map(f));
console.log(JSON.stringify({ windows, runs }));
console.log(
  `${windows} windows, best of ${rounds}, µs per window, wall (CPU): fire ${best((r) => r.fireUs)} (${best((r) => r.fireCpuUs)}), cut ${best((r) => r.cutUs)} (${best((r) => r.cutCpuUs)}), ` +
    `store ${best((r) => r.storeUs)} (${best((r) => r.storeCpuUs)}), total ${best((r) => r.fireUs + r.cutUs + r.storeUs).toFixed(2)} (${best((r) => r.fireCpuUs + r.cutCpuUs + r.storeCpuUs).toFixed(2)})`,
);
process.exit(0);

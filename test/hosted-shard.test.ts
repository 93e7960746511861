import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { jetstream, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { actorKey, shardOfKey } from "../actors/actor-keys.js";
import { addValue, emptyAgg } from "../actors/aggregates.js";
import type { WindowPartial } from "../actors/router.js";
import { parseRules } from "../actors/rules.js";
import type { WindowResult } from "../actors/window-result.js";
import { HostedShard, type HostedShardSettings } from "../node/hosted-shard.js";
import { encodeMailbox } from "../node/mailbox-codec.js";
import { ShardStateLog, type ShardStateWriter, type StateChanges } from "../node/shard-state-log.js";
import { ensureStreams, streams, subjects } from "../node/streams.js";
import { RocksStateStore } from "../runtime/state-store.js";
import { eventually, startTestNats, tempDir } from "./harness.js";

let nats: Awaited<ReturnType<typeof startTestNats>>;
let nc: NatsConnection;
let js: JetStreamClient;
let jsm: JetStreamManager;

before(async () => {
  nats = await startTestNats();
  nc = await connect({ servers: nats.url });
  js = jetstream(nc);
  jsm = await ensureStreams(nc);
  await ShardStateLog.ensureStream(jsm, 1);
});

after(async () => {
  await nc?.close();
  await nats?.cleanup();
});

/** A promise and its resolve, to hand an event from one side of a test to the other. */
function signal<T = void>(): { promise: Promise<T>; resolve(value: T): void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** The real state log, whose commits wait for the test to let each through (FIFO). */
class GatedStateLog extends ShardStateLog {
  readonly commits: StateChanges[] = [];
  private readonly arrivals: ((changes: StateChanges) => void)[] = [];
  private readonly gates: (() => void)[] = [];
  private failNext?: Error;
  private passAll = false;

  override async open(shard: number, epoch: number): Promise<ShardStateWriter> {
    const writer = await super.open(shard, epoch);
    const commit = writer.commit.bind(writer);
    writer.commit = async (changes) => {
      this.commits.push(changes);
      this.arrivals.shift()?.(changes);
      if (!this.passAll) await new Promise<void>((r) => this.gates.push(r));
      if (this.failNext) {
        const e = this.failNext;
        this.failNext = undefined;
        throw e;
      }
      return commit(changes);
    };
    return writer;
  }

  /** Resolves with the next commit's changes once it is attempted (it then waits for `release`). */
  nextCommit(): Promise<StateChanges> {
    const arrived = signal<StateChanges>();
    this.arrivals.push(arrived.resolve);
    return arrived.promise;
  }

  /** From now on every commit goes through at once. */
  openGate(): void {
    this.passAll = true;
    for (const gate of this.gates.splice(0)) gate();
  }

  release(failure?: Error): void {
    this.failNext = failure;
    const gate = this.gates.shift();
    assert.ok(gate, "a commit waits at the gate");
    gate();
  }
}

const t0 = Date.UTC(2026, 10, 24, 10, 0, 0);
const [rule] = parseRules(`{"metrics": [{"name": "m", "kind": "status", "aggregates": ["count"]}]}`);
const shardCount = 64;

/** The one window of series `dims` of metric `m`: each test uses its own, in its own shard. */
function windowKey(dims: string): string {
  return actorKey("m", "1m", t0, JSON.stringify([dims]));
}

/** Router batch `last` of partition 0, holding `events` events of the window `key`. */
async function publishBatch(key: string, last: number, events: number): Promise<number> {
  const agg = emptyAgg();
  for (let i = 0; i < events; i++) addValue(agg, 1);
  const partial: WindowPartial = { metric: "m", window: "1m", start: t0, end: t0 + 60_000, dims: {}, key, agg };
  const body = encodeMailbox({ type: "partials", partition: 0, first: last, last, partials: [partial] });
  return (await js.publish(subjects.mailbox(shardOfKey(key, shardCount)), body)).seq;
}

/** `promise`, or a failure naming `what` after 10 s: a regression fails the test rather than hanging it. */
function within<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer!: NodeJS.Timeout;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), 10_000)));
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** Router batch `last` of partition 0: for each of `windows` (all of minute `start`), its `events` events. */
async function publishPartials(last: number, start: number, windows: [key: string, events: number][]): Promise<void> {
  const partials = windows.map(([key, events]): WindowPartial => {
    const agg = emptyAgg();
    for (let i = 0; i < events; i++) addValue(agg, 1);
    return { metric: "m", window: "1m", start, end: start + 60_000, dims: {}, key, agg };
  });
  await js.publish(subjects.mailbox(shardOfKey(windows[0]![0], shardCount)), encodeMailbox({ type: "partials", partition: 0, first: last, last, partials }));
}

async function ackFloor(shard: HostedShard): Promise<number> {
  return (await jsm.consumers.info(streams.mailbox, shard.consumerName)).ack_floor.stream_seq;
}

const metaPosition = (changes: StateChanges) => (JSON.parse(Buffer.from(changes.meta).toString()) as { position: number }).position;

function hostShard(
  key: string,
  stateLog: ShardStateLog,
  store: RocksStateStore,
  results: WindowResult[],
  logs: string[] = [],
  more: { settings?: Partial<HostedShardSettings>; observe?: (key: string) => void } = {},
) {
  const waiting: { count: number; resolve(): void }[] = [];
  const shard = new HostedShard(
    shardOfKey(key, shardCount),
    1,
    {
      js,
      jsm,
      store,
      stateLog,
      shardCount,
      ruleOf: () => rule,
      sink: {
        emitted: (emitted) => {
          if (emitted.status !== "provisional") return;
          // A row's provisional result comes as its JSON too.
          const result = "json" in emitted ? (JSON.parse(emitted.json) as WindowResult) : emitted;
          results.push(result);
          for (const w of waiting.filter((w) => result.eventCount >= w.count)) w.resolve();
        },
        finals: async (encoded) => {
          // A row's final comes as its JSON (`EncodedResult`).
          const finals = encoded.map((r) => ("json" in r ? (JSON.parse(r.json) as WindowResult) : r));
          results.push(...finals);
          for (const w of waiting.filter((w) => finals.some((result) => result.eventCount >= w.count))) w.resolve();
        },
      },
      onFenced: () => assert.fail("not fenced"),
      observe: more.observe,
      log: (message) => logs.push(message),
    },
    { emitIntervalMs: 0, actorIdleMs: 60_000, checkpointIntervalMs: 0, maxBatch: 1, compactAfterBytes: 1 << 30, ...more.settings },
  );
  /** Resolves once a provisional result counts `count` events: the mailbox up to there was applied. */
  const counted = (count: number) => {
    const done = signal();
    waiting.push({ count, resolve: done.resolve });
    if (results.some((r) => r.eventCount >= count)) done.resolve();
    // A regression shows as a mailbox stalled behind the held checkpoint: fail, do not hang.
    return within(done.promise, `a result counting ${count} events`);
  };
  return { shard, counted };
}

test("a checkpoint being written does not hold up the mailbox, and its position is acked only once written", async () => {
  const dir = tempDir();
  const store = await RocksStateStore.open(dir.path);
  const stateLog = new GatedStateLog(js, jsm);
  const results: WindowResult[] = [];
  const key = windowKey("a");
  const { shard, counted } = hostShard(key, stateLog, store, results);
  try {
    await shard.start();
    const first = stateLog.nextCommit();
    const seq1 = await publishBatch(key, 1, 3);
    // The checkpoint after the first message cuts at it, and its commit to the state log waits.
    const cut = await first;
    assert.equal(metaPosition(cut), seq1);
    assert.equal(shard.checkpoints, 0);

    // Meanwhile the next mailbox messages are applied and their results go out.
    await publishBatch(key, 2, 4);
    const seq3 = await publishBatch(key, 3, 5);
    await counted(12);
    assert.equal(await ackFloor(shard), 0, "nothing is acked before the checkpoint is on the log");
    assert.equal(stateLog.commits.length, 1, "one checkpoint in flight at a time");

    // Graceful stop waits for the checkpoint in flight, then writes a last one.
    const second = stateLog.nextCommit();
    const stopped = shard.stop();
    stateLog.release();
    // Written: the position of the cut (not the last message applied) is acked, and RocksDB holds the cut.
    const next = await second;
    await eventually(async () => ((await ackFloor(shard)) === seq1 ? true : undefined), 10_000, "the cut's position acked");
    const local = JSON.parse(Buffer.from((await store.get(`shard/${shard.id}/meta`))!).toString()) as { position: number };
    assert.equal(local.position, seq1);
    // The last cut holds what came after the first (the window's actor was marked dirty again).
    assert.equal(metaPosition(next), seq3);
    assert.ok(next.puts.some(([stored]) => stored.startsWith(`shard/${shard.id}/actor/`)), "the window's state is in the last cut");
    stateLog.release();
    await stopped;
    // An ack is a plain publish: the consumer's floor follows it a moment later.
    await eventually(async () => ((await ackFloor(shard)) === seq3 ? true : undefined), 10_000, "the last cut's position acked");
    assert.equal(shard.checkpoints, 2);
  } finally {
    await store.close();
    dir.remove();
  }
});

test("a failed background checkpoint fails the shard, which recovers from the last written one and replays", async () => {
  const dir = tempDir();
  const store = await RocksStateStore.open(dir.path);
  const stateLog = new GatedStateLog(js, jsm);
  const results: WindowResult[] = [];
  const logs: string[] = [];
  const key = windowKey("b");
  const { shard, counted } = hostShard(key, stateLog, store, results, logs);
  assert.notEqual(shard.id, shardOfKey(windowKey("a"), shardCount), "a shard of its own");
  try {
    await shard.start();
    const first = stateLog.nextCommit();
    const seq1 = await publishBatch(key, 1, 3);
    await first;
    await publishBatch(key, 2, 4);
    await counted(7);

    // The commit fails: the shard recovers (crash-only) from nothing written and replays both messages.
    const retried = stateLog.nextCommit();
    results.length = 0;
    stateLog.release(new Error("the state log is unreachable"));
    const again = await retried;
    assert.ok(logs.some((line) => line.includes("the state log is unreachable")), "the failure is reported");
    assert.ok([seq1, seq1 + 1].includes(metaPosition(again)));
    stateLog.release();
    await counted(7);
    assert.equal(Math.max(...results.map((r) => r.eventCount)), 7, "replayed once: no double counting");

    stateLog.openGate();
    await shard.stop();
    const local = JSON.parse(Buffer.from((await store.get(`shard/${shard.id}/meta`))!).toString()) as { position: number };
    assert.equal(local.position, seq1 + 1);
  } finally {
    await store.close();
    dir.remove();
  }
});

test("a close under way lets the next minute's partials go ahead of it, and holds back those of the windows it fires", async () => {
  const dir = tempDir();
  const store = await RocksStateStore.open(dir.path);
  const stateLog = new GatedStateLog(js, jsm);
  stateLog.openGate();
  // Three windows of one minute in one shard (a shard of its own among the tests'), and the next minute of one of them.
  const home = shardOfKey(windowKey("close-0"), shardCount);
  const due = Array.from({ length: 200 }, (_, i) => windowKey(`close-${i}`)).filter((k) => shardOfKey(k, shardCount) === home).slice(0, 3);
  assert.equal(due.length, 3);
  const nextKey = actorKey("m", "1m", t0 + 60_000, JSON.stringify(["close-0"]));
  // The close fires one window per slice and waits in its first pause until the test lets it go on.
  const paused = signal();
  const resume = signal();
  let pauses = 0;
  const firePause = () => {
    if (pauses++ > 0) return Promise.resolve();
    paused.resolve();
    return resume.promise;
  };
  const seen = new Map<string, () => void>();
  const observed = (key: string) => new Promise<void>((resolve) => seen.set(key, resolve));
  const results: WindowResult[] = [];
  const { shard, counted } = hostShard(due[0]!, stateLog, store, results, [], {
    settings: { fireSlice: 1, firePause },
    observe: (key) => seen.get(key)?.(),
  });
  assert.notEqual(home, shardOfKey(windowKey("a"), shardCount));
  assert.notEqual(home, shardOfKey(windowKey("b"), shardCount));
  const finalsOf = (key: string) => results.filter((r) => r.key === key && r.status !== "provisional").map((r) => [r.revision, r.eventCount]);
  try {
    await shard.start();
    await publishPartials(1, t0, due.map((key) => [key, 2]));
    await counted(2);
    // The minute closes at its end + lateness.
    await js.publish(subjects.mailbox(home), encodeMailbox({ type: "marks", marks: [[0, { watermark: t0 + 60_000 + rule!.latenessMs, idle: false }]] }));
    await within(paused.promise, "the close's first pause");

    // The next minute's events are counted while the close waits: they need not wait for it, nor
    // for the next watermark message (which waits its turn behind the close).
    await js.publish(subjects.mailbox(home), encodeMailbox({ type: "marks", marks: [[0, { watermark: t0 + 61_000 + rule!.latenessMs, idle: false }]] }));
    await publishPartials(2, t0 + 60_000, [[nextKey, 5]]);
    await counted(5);
    assert.ok(due.some((key) => finalsOf(key).length === 0), "the close is not over");

    // A late event of a window the close has yet to fire waits for it (and so does everything after it):
    // it corrects the window's final, as it would had the close taken no time.
    const lateSeen = observed(due[2]!);
    await publishPartials(3, t0, [[due[2]!, 7]]);
    await publishPartials(4, t0 + 60_000, [[nextKey, 1]]);
    await within(lateSeen, "the late batch delivered");
    resume.resolve();
    await eventually(() => (results.some((r) => r.key === nextKey && r.eventCount === 6) ? true : undefined), 10_000, "the next minute's later events");
    await eventually(() => (finalsOf(due[2]!).length === 2 ? true : undefined), 10_000, "the correction");
    for (const key of due.slice(0, 2)) assert.deepEqual(finalsOf(key), [[1, 2]]);
    assert.deepEqual(finalsOf(due[2]!), [[1, 2], [2, 9]]);
    await shard.stop();
  } finally {
    await store.close();
    dir.remove();
  }
});

import { createHash } from "node:crypto";
import type { JetStreamClient, JetStreamManager, JsMsg } from "@nats-io/jetstream";
import { parseActorKey, shardOfKey } from "../actors/actor-keys.js";
import type { WindowPartial } from "../actors/router.js";
import type { MetricRule } from "../actors/rules.js";
import { storedWindowTimes, windowActorKind, type WindowActorEnv, type WindowMessage } from "../actors/window-actor.js";
import type { EncodedResult, WindowResult } from "../actors/window-result.js";
import { WindowShard, type PartitionMark, type ShardState } from "../actors/window-shard.js";
import { ActorSystem, type ActorCut } from "../runtime/actor-system.js";
import type { StateStore } from "../runtime/state-store.js";
import { foldedAudit } from "./audit.js";
import { decodeMailbox, encodeMailbox } from "./mailbox-codec.js";
import type { ResultQuery } from "./results-store.js";
import { FencedError, type ShardStateLog, type ShardStateWriter } from "./shard-state-log.js";
import { streams, subjects } from "./streams.js";
import { SupervisedConsumer } from "./supervised-consumer.js";

export interface HostedShardSettings {
  emitIntervalMs: number;
  actorIdleMs: number;
  /** How often the actors' state and the mailbox position are written together. */
  checkpointIntervalMs: number;
  maxBatch: number;
  /** Compact the shard's state log once it holds this many bytes of changes since its last snapshot. */
  compactAfterBytes: number;
  /** Windows fired per slice of a close, and what a close waits for between slices (tests; `WindowShardOptions`). */
  fireSlice?: number;
  firePause?: () => Promise<void>;
}

/** Where a shard's results go. */
export interface ResultSink {
  /**
   * Every result, as its window emits it: a provisional one is published from here (nobody
   * waits for it); a final or corrected one only announces itself (say, to drop the window's
   * provisional result still waiting to go out) and comes again in `finals`. `held`: a
   * provisional result of a row of the shard's table, which answers queries for it (`openRows`),
   * so a view of open windows need not keep it.
   */
  emitted(result: WindowResult | EncodedResult, held?: boolean): void;
  /**
   * Final and corrected results, in the order they were emitted, gathered over one turn of the
   * event loop: resolves once every one of them is durably stored (JetStream acked it).
   */
  finals(results: (WindowResult | EncodedResult)[]): Promise<unknown>;
}

export interface ShardDeps {
  js: JetStreamClient;
  jsm: JetStreamManager;
  store: StateStore;
  stateLog: ShardStateLog;
  /** Shards of the cluster (fixed). */
  shardCount: number;
  ruleOf(metric: string): MetricRule | undefined;
  sink: ResultSink;
  /** This node lost the shard to a newer owner (its state log was fenced): stop hosting it. */
  onFenced(shard: number): void;
  /** Events arriving for a series (its window's partials and its sub-actors' hand-overs): the hot-key detector's input. */
  observe?(key: string, events: number): void;
  log(message: string): void;
}

interface ShardMeta {
  /** The mailbox stream sequence the checkpointed actors reflect. */
  position: number;
  shard: ShardState;
}

/**
 * One shard of window actors, hosted here for one ownership epoch. Exactly once: every
 * `checkpointIntervalMs` it cuts the shard between two mailbox messages (the changed actor
 * states, the shard's watermark and applied batches, the mailbox position, and the results
 * emitted up to there), then, while later mailbox messages go on being applied, waits until
 * those results are stored and writes the cut: first to the shard's state log in JetStream (what
 * another node needs to take the shard over; the write fails once a newer owner has fenced the
 * log), then to the local RocksDB in one batch, then it acks the cut's position. After a crash it
 * resumes from that checkpoint (local, or from the log when the local copy is not the latest)
 * and replays the mailbox after it: the actors are deterministic in mailbox order, so they emit
 * the same final and corrected results again, and the sinks keep one per (window, revision).
 */
export class HostedShard {
  readonly actors: ActorSystem<WindowMessage>;
  private readonly windowEnv: WindowActorEnv;
  private window!: WindowShard;
  private writer?: ShardStateWriter;
  private consumer?: SupervisedConsumer;
  private position = 0;
  private lastCheckpointAt = 0;
  private outbox = new Set<Promise<unknown>>();
  private outboxFailure?: unknown;
  private unacked?: JsMsg;
  /** The checkpoint being written in the background: at most one; it never rejects (see `failed`). */
  private inflight?: Promise<void>;
  /** Why a background checkpoint failed: nothing goes on until the shard has recovered. */
  private failure?: unknown;
  /** Bumped at every recovery and at abandon: a background checkpoint of an older one fails nothing. */
  private incarnation = 0;
  /** Deliveries and cuts take turns: a cut must fall between two mailbox messages. */
  private turn: Promise<unknown> = Promise.resolve();
  /**
   * The closes marks messages started (`WindowShard.markAll` firing their due windows in slices,
   * one after the other), the last one's, while they run: later partials wait for them unless
   * they may go ahead (`overtakesClose`), and no cut falls inside them. It never rejects (a
   * failure fails the shard).
   */
  private closing?: Promise<void>;
  /** Final and corrected results emitted and not yet handed to the sink: they go in batches (`flushFinals`). */
  private finals: (WindowResult | EncodedResult)[] = [];
  private finalsFlush?: NodeJS.Immediate;
  checkpoints = 0;

  constructor(
    readonly id: number,
    readonly epoch: number,
    private readonly deps: ShardDeps,
    private readonly settings: HostedShardSettings,
  ) {
    this.windowEnv = {
      rule: (metric) => deps.ruleOf(metric),
      emit: (result) => this.emit(result),
      forward: (partial, id) => this.forward([partial], `sub:${createHash("sha1").update(id).digest("base64url")}`),
      emitIntervalMs: settings.emitIntervalMs,
      now: Date.now,
    };
    this.actors = new ActorSystem(
      windowActorKind(this.windowEnv),
      deps.store,
      { idleMs: settings.actorIdleMs, prefix: `shard/${id}/actor/` },
    );
    this.window = this.newWindowShard();
  }

  get watermark(): number {
    return this.window.watermark;
  }

  get pendingTimers(): number {
    return this.window.pendingTimers;
  }

  /** The open windows of the shard's table that match `q`, as provisional results. */
  openRows(q: ResultQuery): WindowResult[] {
    const rows = this.window.openRows(q.metric, q.window, q.from, q.to, q.where);
    for (const r of rows) {
      r.shard = this.id;
      r.epoch = this.epoch;
    }
    return rows;
  }

  /** Open windows: actors and rows of the shard's table. */
  get activeWindows(): number {
    return this.window.activeWindows;
  }

  /** Consumer name of this shard's mailbox: one per shard, whoever hosts it. */
  get consumerName(): string {
    return `shard-${this.id}`;
  }

  async start(): Promise<void> {
    this.consumer = new SupervisedConsumer(this.deps.js, this.deps.jsm, {
      name: this.consumerName,
      stream: streams.mailbox,
      filter: subjects.mailbox(this.id),
      maxBatch: this.settings.maxBatch,
      maxAckPending: 5_000,
      recover: () => this.recover(),
      handle: (batch) => this.deliver(batch),
      log: this.deps.log,
    });
    await this.consumer.start();
  }

  /** Graceful: no more mailbox, the checkpoint in flight, a last one, then the actors go. */
  async stop(): Promise<void> {
    await this.consumer?.stop();
    try {
      await this.checkpoint();
    } finally {
      this.actors.reset();
    }
  }

  /** Lost to a newer owner: drop everything not checkpointed, write nothing more. */
  async abandon(): Promise<void> {
    await this.consumer?.stop();
    await this.closing;
    this.incarnation++;
    this.dropFinals();
    // Its RocksDB write must be over before anyone reads this shard's local state again.
    await this.inflight;
    this.actors.reset();
  }

  /** Rebuild from the last checkpoint; returns the mailbox sequence to resume at. */
  private async recover(): Promise<number> {
    this.incarnation++;
    // A checkpoint the failed incarnation still writes lands (or fails) before anything is read,
    // and its close ends before its actors go.
    await this.inflight;
    await this.closing;
    this.failure = undefined;
    this.actors.reset();
    this.dropFinals();
    this.outbox = new Set();
    this.outboxFailure = undefined;
    this.unacked = undefined;
    this.window = this.newWindowShard();
    // Opening the log fences every older owner's writer; a newer owner's fence makes this fail.
    this.writer = await this.deps.stateLog.open(this.id, this.epoch);
    const latest = await this.deps.stateLog.lastCheckpointId(this.id);
    let { local: meta, checkpointId } = await this.localCheckpoint();
    if (checkpointId !== latest) meta = await this.restoreFromLog();
    if (meta) this.window.restore(meta.shard);
    // Event-time timers are not stored: every window in the checkpoint gets its timers back.
    // Event-time timers and the series admitted under a `maxSeries` are not stored either: both
    // are rebuilt from the windows in the checkpoint (a base window also brings back the timers
    // of the rollup windows above it, which may have no state yet).
    for await (const [key, bytes] of this.actors.storedStates()) {
      const { end, open } = storedWindowTimes(bytes);
      this.window.restoreWindow(key, end, open, bytes);
    }
    this.position = meta?.position ?? 0;
    // Staggered by shard: a cut takes no time now, so shards started together would all write
    // their checkpoints in the same instant every interval, a burst that delays everything else.
    this.lastCheckpointAt = Date.now() - (this.id / this.deps.shardCount) * this.settings.checkpointIntervalMs;
    return this.position + 1;
  }

  private deliver(batch: JsMsg[]): Promise<void> {
    return this.inTurn(async () => {
      if (this.failure) throw this.failure;
      for (const m of batch) {
        if (m.seq <= this.position) continue;
        const message = decodeMailbox(m.data);
        if (message.type !== "marks" && this.deps.observe) this.observe(message.partials);
        // Only partials of windows a close under way does not touch may go ahead of it (marks queue behind it).
        if (this.closing && message.type !== "marks" && !this.window.overtakesClose(message.partials)) {
          await this.closing;
          if (this.failure) throw this.failure;
        }
        if (message.type === "partials") this.window.applyBatch(message.origin ?? String(message.partition), message.last, message.partials);
        else if (message.type === "forwarded") this.window.applyForwarded(message.partials);
        else this.close(message.marks);
        this.position = m.seq;
        this.unacked = m;
      }
      if (this.outboxFailure) throw this.outboxFailure;
      // One in flight at a time: while it is, or while a close runs, the next cut waits for a later batch.
      if (!this.inflight && !this.closing && Date.now() - this.lastCheckpointAt >= this.settings.checkpointIntervalMs) await this.cut();
    });
  }

  /**
   * Fires the windows `marks` make due, in slices, after those of earlier marks, while later
   * messages that may overtake it are applied (`deliver`): a minute closing a million windows
   * takes seconds of work, and the next minute's provisional results need not wait for it.
   * Sub-actors tick once it is done.
   */
  private close(marks: Iterable<readonly [number, PartitionMark]>): void {
    const incarnation = this.incarnation;
    const closing: Promise<void> = this.window
      .markAll(marks, true)
      .catch((e) => this.failed(e, incarnation))
      .finally(() => {
        if (this.closing === closing) this.closing = undefined;
      });
    this.closing = closing;
  }

  /** A checkpoint now, after the one in flight, and written when this returns (graceful stop, tests). */
  async checkpoint(): Promise<void> {
    await this.settled();
    await this.inTurn(() => this.cut());
    await this.settled();
  }

  private async settled(): Promise<void> {
    while (this.inflight) await this.inflight;
    if (this.failure) throw this.failure;
  }

  private inTurn<T>(work: () => Promise<T>): Promise<T> {
    const run = this.turn.then(work);
    this.turn = run.catch(() => undefined);
    return run;
  }

  /**
   * Cuts the shard here, between two mailbox messages, and starts writing the cut in the
   * background. Synchronously, once the actors are idle (they only ever wait for a state read at
   * activation): their changed states, the shard's meta at `position`, the results and forwards
   * emitted so far (those emitted later belong to the next checkpoint), and the message to ack.
   */
  private async cut(): Promise<void> {
    const writer = this.writer;
    if (!writer || this.inflight) return;
    while (this.closing) await this.closing;
    while (this.actors.pendingCount > 0) await this.actors.idle();
    // The finals emitted up to here belong to this cut: handed over now, so it waits for them.
    this.flushFinals();
    const meta = encode<ShardMeta>({ position: this.position, shard: this.window.save() });
    const actors = this.actors.cut([[this.metaKey, meta]]);
    const outputs = [...this.outbox];
    const ack = this.unacked;
    this.unacked = undefined;
    this.lastCheckpointAt = Date.now();
    const incarnation = this.incarnation;
    const inflight: Promise<void> = this.write(writer, actors, meta, outputs, ack)
      .catch((e) => this.failed(e, incarnation))
      .finally(() => {
        if (this.inflight === inflight) this.inflight = undefined;
      });
    this.inflight = inflight;
  }

  /** A cut's writes, in order: its outputs stored, the state log (fenced), RocksDB, then the ack. */
  private async write(writer: ShardStateWriter, actors: ActorCut, meta: Uint8Array, outputs: Promise<unknown>[], ack?: JsMsg): Promise<void> {
    await actors.write(async ({ puts, deletes }) => {
      // Inside the cut's write, so that a failure here also hands the cut back to the actors.
      await Promise.all(outputs);
      if (this.outboxFailure) throw this.outboxFailure;
      const { checkpointId } = await writer.commit({ puts, deletes, meta });
      return [[this.checkpointIdKey, encode(checkpointId)]];
    });
    this.checkpoints++;
    ack?.ack();
    // The store holds exactly this cut now: the next one is not written before this is done.
    if (writer.bytesSinceSnapshot >= this.settings.compactAfterBytes) await writer.compact(this.localEntries(), meta);
  }

  /** A background checkpoint failed: the shard fails too (crash-only recovery), never goes on without it. */
  private failed(e: unknown, incarnation: number): void {
    if (incarnation !== this.incarnation) return;
    this.failure ??= e;
    if (e instanceof FencedError) this.deps.onFenced(this.id);
    this.consumer?.crash(e);
  }

  private get metaKey(): string {
    return `shard/${this.id}/meta`;
  }

  private get checkpointIdKey(): string {
    return `shard/${this.id}/checkpoint-id`;
  }

  private async localCheckpoint(): Promise<{ local?: ShardMeta; checkpointId: number }> {
    const [meta, id] = await Promise.all([this.deps.store.get(this.metaKey), this.deps.store.get(this.checkpointIdKey)]);
    return { local: meta ? decode<ShardMeta>(meta) : undefined, checkpointId: id ? decode<number>(id) : 0 };
  }

  /** This node's copy is not the latest checkpoint (another node had the shard): take the log's. */
  private async restoreFromLog(): Promise<ShardMeta | undefined> {
    const { entries, meta, checkpointId } = await this.deps.stateLog.restore(this.id);
    const prefix = `shard/${this.id}/`;
    await this.deps.store.deleteRange(prefix, prefix + "\uffff");
    const puts: [string, Uint8Array][] = [...entries];
    if (meta) puts.push([this.metaKey, meta]);
    puts.push([this.checkpointIdKey, encode(checkpointId)]);
    await this.deps.store.write(puts);
    return meta ? decode<ShardMeta>(meta) : undefined;
  }

  /** Every stored entry of this shard: what a log snapshot holds. */
  private async *localEntries(): AsyncIterable<[string, Uint8Array]> {
    for await (const [key, value] of this.deps.store.scan(this.actors.prefix, this.actors.prefix + "\uffff")) yield [key, value];
  }

  private observe(partials: WindowPartial[]): void {
    for (const p of partials) {
      // A salted sub-window's key ("\t#" and its salt): its events reach its window's forwards too.
      if (p.agg.count === 0 || p.metric.startsWith("_") || p.key.includes("\t#")) continue;
      this.deps.observe!(p.key, p.agg.count);
    }
  }

  /** Events folded into `__other__` per metric by this shard (checkpointed with it). */
  get foldedByMetric(): ReadonlyMap<string, number> {
    return this.window.foldedByMetric;
  }

  private newWindowShard(): WindowShard {
    return new WindowShard(this.id, this.actors, (metric) => this.deps.ruleOf(metric) ?? { latenessMs: 0, horizonMs: 0 }, {
      shardCount: this.deps.shardCount,
      foldedAudit,
      forward: (partials, id) => this.forward(partials, id),
      table: {
        ...this.windowEnv,
        emit: (result) => this.emit(result, true),
        emitEncoded: (result) => this.emitEncoded(result),
        encodedStamp: `,"shard":${this.id},"epoch":${this.epoch}`,
      },
      fireSlice: this.settings.fireSlice,
      pause: this.settings.firePause,
    });
  }

  /** Partials for other shards' windows go through their mailboxes, once: the id is stable across replays. */
  private forward(partials: WindowPartial[], id: string): void {
    const byShard = new Map<number, WindowPartial[]>();
    for (const partial of partials) {
      const shard = shardOfKey(partial.key, this.deps.shardCount);
      byShard.set(shard, [...(byShard.get(shard) ?? []), partial]);
    }
    for (const [shard, list] of byShard) {
      const body = encodeMailbox({ type: "forwarded", partials: list });
      this.track(this.deps.js.publish(subjects.mailbox(shard), body, { msgID: `fwd:${id}:${shard}` }));
    }
  }

  /**
   * `result` is the actor's own new object: stamped in place rather than copied (one object per
   * window change). A final or corrected one waits for the end of this turn of the event loop
   * (or the next cut), so the finals of many windows go out together.
   */
  private emit(result: WindowResult, held = false): void {
    result.shard = this.id;
    result.epoch = this.epoch;
    this.deps.sink.emitted(result, held && result.status === "provisional");
    if (result.status === "provisional") return;
    this.finals.push(result);
    this.finalsFlush ??= setImmediate(() => this.flushFinals());
  }

  /**
   * A row's result as its JSON (`WindowTable`), stamped with this shard and epoch already
   * (`encodedStamp`). A provisional one is held: the table answers queries for its row.
   */
  private emitEncoded(result: EncodedResult): void {
    this.deps.sink.emitted(result, result.status === "provisional");
    if (result.status === "provisional") return;
    this.finals.push(result);
    this.finalsFlush ??= setImmediate(() => this.flushFinals());
  }

  /** Hands the finals gathered so far to the sink; the next checkpoint waits until they are stored. */
  private flushFinals(): void {
    if (this.finalsFlush) clearImmediate(this.finalsFlush);
    this.finalsFlush = undefined;
    if (this.finals.length === 0) return;
    const batch = this.finals;
    this.finals = [];
    let stored: Promise<unknown>;
    try {
      stored = this.deps.sink.finals(batch);
    } catch (e) {
      stored = Promise.reject(e); // a closed connection: the shard fails and recovers
    }
    this.track(stored);
  }

  /** A recovery or an abandon: what the failed incarnation emitted and did not hand over is not its to send. */
  private dropFinals(): void {
    if (this.finalsFlush) clearImmediate(this.finalsFlush);
    this.finalsFlush = undefined;
    this.finals = [];
  }

  /** An output in flight: the next checkpoint waits until it is stored; a failure fails the shard. */
  private track(output: Promise<unknown>): void {
    const stored = output.catch((e) => {
      this.outboxFailure ??= e;
    });
    this.outbox.add(stored);
    void stored.finally(() => this.outbox.delete(stored));
  }
}

function encode<T>(value: T): Uint8Array {
  return Buffer.from(JSON.stringify(value));
}

function decode<T>(bytes: Uint8Array): T {
  return JSON.parse(Buffer.from(bytes).toString()) as T;
}

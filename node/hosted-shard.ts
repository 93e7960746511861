import { createHash } from "node:crypto";
import type { JetStreamClient, JetStreamManager, JsMsg } from "@nats-io/jetstream";
import { parseActorKey, shardOfKey } from "../actors/actor-keys.js";
import type { WindowPartial } from "../actors/router.js";
import type { MetricRule } from "../actors/rules.js";
import { storedWindowTimes, windowActorKind, type WindowMessage } from "../actors/window-actor.js";
import type { WindowResult } from "../actors/window-result.js";
import { WindowShard, type ShardState } from "../actors/window-shard.js";
import { ActorSystem } from "../runtime/actor-system.js";
import type { StateStore } from "../runtime/state-store.js";
import { foldedAudit } from "./audit.js";
import { decodeMailbox, encodeMailbox } from "./mailbox-codec.js";
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
}

/** Where a shard's results go. Resolves once the result is durably stored (JetStream acked it). */
export type ResultSink = (result: WindowResult) => Promise<unknown>;

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
  observe?(metric: string, dimsId: string, events: number): void;
  log(message: string): void;
}

interface ShardMeta {
  /** The mailbox stream sequence the checkpointed actors reflect. */
  position: number;
  shard: ShardState;
}

/**
 * One shard of window actors, hosted here for one ownership epoch. Exactly once: every
 * `checkpointIntervalMs` it waits until its actors are idle and every result they emitted is
 * stored, then writes the changed actor state, the shard's watermark and applied batches, and
 * the mailbox position: first to the shard's state log in JetStream (what another node needs to
 * take the shard over; the write fails once a newer owner has fenced the log), then to the local
 * RocksDB in one batch, then it acks. After a crash it resumes from that checkpoint (local, or
 * from the log when the local copy is not the latest) and replays the mailbox after it: the
 * actors are deterministic in mailbox order, so they emit the same final and corrected results
 * again, and the sinks keep one per (window, revision).
 */
export class HostedShard {
  readonly actors: ActorSystem<WindowMessage>;
  private window!: WindowShard;
  private writer?: ShardStateWriter;
  private consumer?: SupervisedConsumer;
  private position = 0;
  private lastCheckpointAt = 0;
  private outbox = new Set<Promise<unknown>>();
  private outboxFailure?: unknown;
  private unacked?: JsMsg;
  checkpoints = 0;

  constructor(
    readonly id: number,
    readonly epoch: number,
    private readonly deps: ShardDeps,
    private readonly settings: HostedShardSettings,
  ) {
    this.actors = new ActorSystem(
      windowActorKind({
        rule: (metric) => deps.ruleOf(metric),
        emit: (result) => this.emit(result),
        forward: (partial, id) => this.forward([partial], `sub:${createHash("sha1").update(id).digest("base64url")}`),
        emitIntervalMs: settings.emitIntervalMs,
        now: Date.now,
      }),
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
      maxAckPending: 100_000,
      recover: () => this.recover(),
      handle: (batch) => this.deliver(batch),
      log: this.deps.log,
    });
    await this.consumer.start();
  }

  /** Graceful: no more mailbox, a last checkpoint, then the actors go. */
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
    this.actors.reset();
  }

  /** Rebuild from the last checkpoint; returns the mailbox sequence to resume at. */
  private async recover(): Promise<number> {
    this.actors.reset();
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
      this.window.restoreWindow(key, end, open);
    }
    this.position = meta?.position ?? 0;
    this.lastCheckpointAt = Date.now();
    return this.position + 1;
  }

  private async deliver(batch: JsMsg[]): Promise<void> {
    for (const m of batch) {
      if (m.seq <= this.position) continue;
      const message = decodeMailbox(m.data);
      if (message.type !== "marks" && this.deps.observe) this.observe(message.partials);
      if (message.type === "partials") this.window.applyBatch(message.origin ?? String(message.partition), message.last, message.partials);
      else if (message.type === "forwarded") this.window.applyForwarded(message.partials);
      // Waits while rollup windows fire level by level: nothing after this mark may overtake it.
      else {
        for (const [partition, mark] of message.marks) await this.window.mark(partition, mark);
        this.window.tick();
      }
      this.position = m.seq;
      this.unacked = m;
    }
    if (this.outboxFailure) throw this.outboxFailure;
    if (Date.now() - this.lastCheckpointAt >= this.settings.checkpointIntervalMs) await this.checkpoint();
  }

  /** Actors idle, results stored, then state + position to the log and to RocksDB, then ack. */
  async checkpoint(): Promise<void> {
    if (!this.writer) return;
    await this.actors.idle();
    while (this.outbox.size > 0) await Promise.all([...this.outbox]);
    if (this.outboxFailure) throw this.outboxFailure;
    const meta = encode<ShardMeta>({ position: this.position, shard: this.window.save() });
    const writer = this.writer;
    try {
      await this.actors.checkpoint([[this.metaKey, meta]], [], async ({ puts, deletes }) => {
        const { checkpointId } = await writer.commit({ puts, deletes, meta });
        return [[this.checkpointIdKey, encode(checkpointId)]];
      });
    } catch (e) {
      if (e instanceof FencedError) this.deps.onFenced(this.id);
      throw e;
    }
    this.lastCheckpointAt = Date.now();
    this.checkpoints++;
    this.unacked?.ack();
    this.unacked = undefined;
    if (writer.bytesSinceSnapshot >= this.settings.compactAfterBytes) await writer.compact(this.localEntries(), meta);
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
      if (p.agg.count === 0 || p.metric.startsWith("_")) continue;
      const { dimsId, salt } = parseActorKey(p.key);
      if (salt === undefined) this.deps.observe!(p.metric, dimsId, p.agg.count);
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

  private emit(result: WindowResult): void {
    this.track(this.deps.sink({ ...result, shard: this.id, epoch: this.epoch }));
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

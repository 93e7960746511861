import type { JsMsg } from "@nats-io/jetstream";
import { shardOfKey } from "../actors/actor-keys.js";
import type { MetricRule } from "../actors/rules.js";
import { storedWindowTimes, windowActorKind, type WindowMessage } from "../actors/window-actor.js";
import type { WindowResult } from "../actors/window-result.js";
import { WindowShard, type ShardState } from "../actors/window-shard.js";
import { ActorSystem } from "../runtime/actor-system.js";
import type { StateStore } from "../runtime/state-store.js";
import { foldedAudit } from "./audit.js";
import { decodeMailbox } from "./mailbox-codec.js";

export interface ShardHostSettings {
  shards: number;
  emitIntervalMs: number;
  actorIdleMs: number;
  /** How often the actors' state and the mailbox position are written together. */
  checkpointIntervalMs: number;
}

/** Where results go. Resolves once the result is durably stored (JetStream acked it). */
export type ResultSink = (result: WindowResult) => Promise<unknown>;

const metaKey = "shardhost/meta";

interface HostMeta {
  /** The mailbox stream sequence the actors' checkpointed state reflects. */
  position: number;
  shards: [shard: number, ShardState][];
}

/**
 * The window actors of this node's shards, fed from the mailbox stream. Exactly once: every
 * `checkpointIntervalMs` it waits until the actors are idle and every result they emitted is
 * stored, then writes all changed actor state, the shards' watermarks and applied batches, and
 * the mailbox position, in one RocksDB batch. After a crash it resumes from that checkpoint and
 * replays the mailbox after it: the actors are deterministic in the mailbox order, so they emit
 * the same final and corrected results again, and the sinks keep one per (window, revision).
 */
export class ShardHost {
  readonly actors: ActorSystem<WindowMessage>;
  readonly shards = new Map<number, WindowShard>();
  private position = 0;
  private lastCheckpointAt = 0;
  private outbox = new Set<Promise<unknown>>();
  private outboxFailure?: unknown;
  private unacked?: JsMsg;
  checkpoints = 0;

  constructor(
    private readonly store: StateStore,
    private readonly ruleOf: (metric: string) => MetricRule | undefined,
    private readonly sink: ResultSink,
    private readonly settings: ShardHostSettings,
  ) {
    this.actors = new ActorSystem(
      windowActorKind({
        rule: (metric) => this.rule(metric),
        emit: (result) => this.emit(result),
        emitIntervalMs: settings.emitIntervalMs,
        now: Date.now,
      }),
      store,
      { idleMs: settings.actorIdleMs },
    );
  }

  /** Events folded into `__other__` per metric, over this node's shards (checkpointed with them). */
  folded(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const shard of this.shards.values()) for (const [metric, n] of shard.foldedByMetric) out[metric] = (out[metric] ?? 0) + n;
    return out;
  }

  get watermark(): number {
    let wm = Infinity;
    for (const shard of this.shards.values()) wm = Math.min(wm, shard.watermark);
    return wm;
  }

  /** Rebuild from the last checkpoint; returns the mailbox sequence to resume at. */
  async recover(): Promise<number> {
    this.actors.reset();
    this.outbox = new Set();
    this.outboxFailure = undefined;
    this.unacked = undefined;
    this.shards.clear();
    const timing = (metric: string) => this.rule(metric) ?? { latenessMs: 0, horizonMs: 0 };
    const options = { shardCount: this.settings.shards, foldedAudit };
    for (let id = 0; id < this.settings.shards; id++) this.shards.set(id, new WindowShard(id, this.actors, timing, options));
    const stored = await this.store.get(metaKey);
    const meta: HostMeta = stored ? JSON.parse(Buffer.from(stored).toString()) : { position: 0, shards: [] };
    for (const [id, state] of meta.shards) this.shards.get(id)?.restore(state);
    // Event-time timers and the series admitted under a `maxSeries` are not stored either: both
    // are rebuilt from the windows in the checkpoint (a base window also brings back the timers
    // of the rollup windows above it, which may have no state yet).
    for await (const [key, bytes] of this.actors.storedStates()) {
      const { end, open } = storedWindowTimes(bytes);
      this.shards.get(shardOfKey(key, this.settings.shards))!.restoreWindow(key, end, open);
    }
    this.position = meta.position;
    this.lastCheckpointAt = Date.now();
    return meta.position + 1;
  }

  async deliver(batch: JsMsg[]): Promise<void> {
    for (const m of batch) {
      if (m.seq <= this.position) continue;
      const shard = this.shards.get(Number(m.subject.slice(m.subject.lastIndexOf(".") + 1)));
      if (shard) {
        const message = decodeMailbox(m.data);
        if (message.type === "partials") shard.applyBatch(message.origin ?? String(message.partition), message.last, message.partials);
        // Waits while rollup windows fire level by level: nothing after this mark may overtake it.
        else for (const [partition, mark] of message.marks) await shard.mark(partition, mark);
      }
      this.position = m.seq;
      this.unacked = m;
    }
    if (this.outboxFailure) throw this.outboxFailure;
    if (Date.now() - this.lastCheckpointAt >= this.settings.checkpointIntervalMs) await this.checkpoint();
  }

  /** Actors idle, results stored, then state + position in one write, then ack. */
  async checkpoint(): Promise<void> {
    await this.actors.idle();
    while (this.outbox.size > 0) await Promise.all([...this.outbox]);
    if (this.outboxFailure) throw this.outboxFailure;
    const meta: HostMeta = { position: this.position, shards: [...this.shards].map(([id, s]) => [id, s.save()]) };
    await this.actors.checkpoint([[metaKey, Buffer.from(JSON.stringify(meta))]]);
    this.lastCheckpointAt = Date.now();
    this.checkpoints++;
    this.unacked?.ack();
    this.unacked = undefined;
  }

  private rule(metric: string): MetricRule | undefined {
    return this.ruleOf(metric);
  }

  private emit(result: WindowResult): void {
    const stored = this.sink(result).catch((e) => {
      this.outboxFailure ??= e;
    });
    this.outbox.add(stored);
    void stored.finally(() => this.outbox.delete(stored));
  }
}

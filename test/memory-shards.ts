import { shardOfKey } from "../actors/actor-keys.js";
import type { WindowPartial } from "../actors/router.js";
import type { MetricRule } from "../actors/rules.js";
import { storedWindowTimes, windowActorKind, type WindowMessage } from "../actors/window-actor.js";
import type { WindowResult } from "../actors/window-result.js";
import { WindowShard, type ShardState } from "../actors/window-shard.js";
import { foldedAudit } from "../node/audit.js";
import { ActorSystem } from "../runtime/actor-system.js";
import type { StateStore } from "../runtime/state-store.js";

export interface MemoryShardsSettings {
  shards: number;
  emitIntervalMs: number;
  actorIdleMs: number;
  /** Plain windows as actors, not rows of a table (a node keeps them in a table: the default). */
  actorsOnly?: boolean;
  /** Every purge through its window's actor, as before `ActorSystem.forget` (`WindowShardOptions.purgeByMessage`). */
  purgeByMessage?: boolean;
}

/**
 * Every shard of a cluster in one process, without NATS: each shard its own actor system over
 * one store (as a node hosts them), partials forwarded between shards applied at once. For tests
 * of what the shards compute; the NATS side is tested through real nodes.
 */
export class MemoryShards {
  readonly shards = new Map<number, WindowShard>();
  private readonly systems = new Map<number, ActorSystem<WindowMessage>>();

  constructor(
    private readonly store: StateStore,
    private readonly ruleOf: (metric: string) => MetricRule | undefined,
    private readonly sink: (result: WindowResult) => Promise<unknown>,
    private readonly settings: MemoryShardsSettings,
  ) {}

  /** Every shard from the store, as after a restart. */
  async recover(): Promise<void> {
    this.reset();
    this.shards.clear();
    this.systems.clear();
    const { shards, emitIntervalMs, actorIdleMs } = this.settings;
    for (let id = 0; id < shards; id++) {
      const env = {
        rule: this.ruleOf,
        emit: (r: WindowResult) => void this.sink(r),
        // A salted sub-actor's hand-over reaches its window's shard at once (a node sends it through the mailbox).
        forward: (p: WindowPartial) => this.shards.get(shardOfKey(p.key, shards))!.applyForwarded([p]),
        emitIntervalMs,
        now: Date.now,
      };
      const system = new ActorSystem(
        windowActorKind(env),
        this.store,
        { idleMs: actorIdleMs, prefix: `shard/${id}/actor/` },
      );
      const shard = new WindowShard(id, system, (metric) => this.ruleOf(metric) ?? { latenessMs: 0, horizonMs: 0 }, {
        shardCount: shards,
        foldedAudit,
        forward: (partials) => {
          for (const p of partials) this.shards.get(shardOfKey(p.key, shards))!.applyForwarded([p]);
        },
        table: this.settings.actorsOnly ? undefined : env,
        purgeByMessage: this.settings.purgeByMessage,
      });
      const meta = await this.store.get(metaKey(id));
      if (meta) shard.restore(JSON.parse(Buffer.from(meta).toString()) as ShardState);
      for await (const [key, bytes] of system.storedStates()) {
        const { end, open } = storedWindowTimes(bytes);
        shard.restoreWindow(key, end, open, bytes);
      }
      this.systems.set(id, system);
      this.shards.set(id, shard);
    }
  }

  async checkpoint(): Promise<void> {
    await this.actors.idle();
    for (const [id, system] of this.systems) await system.checkpoint([[metaKey(id), Buffer.from(JSON.stringify(this.shards.get(id)!.save()))]]);
  }

  reset(): void {
    for (const system of this.systems.values()) system.reset();
  }

  folded(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const shard of this.shards.values()) for (const [metric, n] of shard.foldedByMetric) out[metric] = (out[metric] ?? 0) + n;
    return out;
  }

  /** The actor systems together: idle (until none has work, as sends cross shards), stop, reset. */
  get actors() {
    return {
      idle: async () => {
        for (let quiet = false; !quiet; ) {
          quiet = true;
          for (const system of this.systems.values()) {
            if (system.pendingCount > 0) quiet = false;
            await system.idle();
          }
        }
      },
      stop: async () => {
        await this.checkpoint();
        this.reset();
      },
      reset: () => this.reset(),
    };
  }
}

function metaKey(id: number): string {
  return `shard/${id}/meta`;
}

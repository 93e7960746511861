import type { WindowResult } from "../actors/window-result.js";
import { HostedShard, type HostedShardSettings, type ShardDeps } from "./hosted-shard.js";
import type { ResultQuery } from "./results-store.js";

/** The shards this node owns right now, each a `HostedShard` at its ownership epoch. */
export class ShardHost {
  readonly shards = new Map<number, HostedShard>();

  constructor(
    private readonly deps: ShardDeps,
    private readonly settings: HostedShardSettings,
  ) {}

  async start(id: number, epoch: number): Promise<void> {
    const shard = new HostedShard(id, epoch, this.deps, this.settings);
    this.shards.set(id, shard);
    await shard.start();
  }

  async stop(id: number): Promise<void> {
    const shard = this.shards.get(id);
    this.shards.delete(id);
    await shard?.stop();
  }

  async abandon(id: number): Promise<void> {
    const shard = this.shards.get(id);
    this.shards.delete(id);
    await shard?.abandon();
  }

  /** The open windows that the shards' tables hold for `q` (`HostedShard.openRows`). */
  openRows(q: ResultQuery): WindowResult[] {
    const out: WindowResult[] = [];
    for (const shard of this.shards.values()) out.push(...shard.openRows(q));
    return out;
  }

  /** The least watermark of the shards hosted here (+Infinity when none). */
  get watermark(): number {
    let wm = Infinity;
    for (const shard of this.shards.values()) wm = Math.min(wm, shard.watermark);
    return wm;
  }

  /** Events folded into `__other__` per metric, over this node's shards. */
  folded(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const shard of this.shards.values()) for (const [metric, n] of shard.foldedByMetric) out[metric] = (out[metric] ?? 0) + n;
    return out;
  }

  get activeWindows(): number {
    let n = 0;
    for (const shard of this.shards.values()) n += shard.activeWindows;
    return n;
  }

  get checkpoints(): number {
    let n = 0;
    for (const shard of this.shards.values()) n += shard.checkpoints;
    return n;
  }

  /** Checkpoint every hosted shard now (tests, benchmarks). */
  async checkpointAll(): Promise<void> {
    await Promise.all([...this.shards.values()].map((s) => s.checkpoint()));
  }
}

import type { ActorSystem } from "../runtime/actor-system.js";
import type { WindowPartial } from "./router.js";
import type { WindowMessage } from "./window-actor.js";

/** What one event partition last said about its event-time progress. */
export interface PartitionMark {
  /** Max event time seen minus the allowed out-of-orderness (or the idle clock, see `idle`). */
  watermark: number;
  /** No events for the idleness timeout: it no longer holds the watermark back. */
  idle: boolean;
}

/**
 * One shard's event time: the watermark over the partitions that feed it, and the event-time
 * timers of its windows (Flink's timer service). A window is told to fire only when the watermark
 * passes its end + lateness, so a watermark step costs nothing for windows not yet due.
 */
export class WindowShard {
  private readonly marks = new Map<number, PartitionMark>();
  /** Per partition, the last router batch applied (its last event sequence): replays are dropped. */
  private readonly applied = new Map<number, number>();
  private readonly timers = new Map<number, Set<string>>();
  private dueTimes: number[] = [];
  private current = -Infinity;

  constructor(
    readonly id: number,
    private readonly actors: ActorSystem<WindowMessage>,
    private readonly latenessOf: (metric: string) => number,
  ) {}

  get watermark(): number {
    return this.current;
  }

  /** Applies one router batch's partials, unless this batch (or a later one) was applied already. */
  applyBatch(partition: number, last: number, partials: WindowPartial[]): boolean {
    if (last <= (this.applied.get(partition) ?? 0)) return false;
    this.applied.set(partition, last);
    for (const partial of partials) this.apply(partial);
    return true;
  }

  apply(partial: WindowPartial): void {
    this.schedule(partial.key, partial.end + this.latenessOf(partial.metric));
    this.actors.send(partial.key, { type: "partial", partial, watermark: this.current });
  }

  /** Make the window `key` fire when the watermark reaches `fireAt` (used when rebuilding after a restart). */
  schedule(key: string, fireAt: number): void {
    if (fireAt > this.current) this.addTimer(fireAt, key);
  }

  /** What must survive a restart besides the actors; timers are rebuilt from the actors' state. */
  save(): ShardState {
    return {
      watermark: Number.isFinite(this.current) ? this.current : null,
      applied: [...this.applied],
      marks: [...this.marks].map(([p, m]) => [p, Number.isFinite(m.watermark) ? m.watermark : null, m.idle]),
    };
  }

  restore(state: ShardState): void {
    this.current = state.watermark ?? -Infinity;
    for (const [p, last] of state.applied) this.applied.set(p, last);
    for (const [p, wm, idle] of state.marks) this.marks.set(p, { watermark: wm ?? -Infinity, idle });
  }

  /** Record a partition's progress; fires every window the shard watermark passed. */
  mark(partition: number, mark: PartitionMark): void {
    this.marks.set(partition, mark);
    const active = [...this.marks.values()].filter((m) => !m.idle);
    const considered = active.length > 0 ? active : [...this.marks.values()];
    const next = Math.min(...considered.map((m) => m.watermark));
    if (next <= this.current) return;
    this.current = next;
    while (this.dueTimes.length > 0 && this.dueTimes[0]! <= next) {
      const due = this.dueTimes.shift()!;
      for (const key of this.timers.get(due)!) this.actors.send(key, { type: "fire", watermark: next });
      this.timers.delete(due);
    }
  }

  get pendingTimers(): number {
    let n = 0;
    for (const keys of this.timers.values()) n += keys.size;
    return n;
  }

  private addTimer(fireAt: number, key: string) {
    let keys = this.timers.get(fireAt);
    if (!keys) {
      keys = new Set();
      this.timers.set(fireAt, keys);
      const at = sortedIndex(this.dueTimes, fireAt);
      this.dueTimes.splice(at, 0, fireAt);
    }
    keys.add(key);
  }
}

export interface ShardState {
  watermark: number | null;
  applied: [partition: number, last: number][];
  marks: [partition: number, watermark: number | null, idle: boolean][];
}

function sortedIndex(sorted: number[], value: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

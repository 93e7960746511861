import type { ActorSystem } from "../runtime/actor-system.js";
import { EventTimeTimers } from "./event-time-timers.js";
import type { WindowPartial } from "./router.js";
import type { WindowMessage } from "./window-actor.js";

/** What one event partition last said about its event-time progress. */
export interface PartitionMark {
  /** Max event time seen minus the allowed out-of-orderness (or the idle clock, see `idle`). */
  watermark: number;
  /** No events for the idleness timeout: it no longer holds the watermark back. */
  idle: boolean;
}

/** When a metric's windows fire (end + lateness) and are forgotten (end + lateness + horizon). */
export interface WindowTiming {
  latenessMs: number;
  horizonMs: number;
}

/**
 * A window's state is purged this long after its horizon, not at it: the router judges
 * lateness by its own partition's watermark, which may trail the shard's a little.
 */
export const purgeMarginMs = 10 * 60_000;

/**
 * One shard's event time: the watermark over the partitions that feed it, and the event-time
 * timers of its windows (Flink's timer service). A window is told to fire when the watermark
 * passes its end + lateness, and to forget its state once past its correction horizon, so a
 * watermark step costs nothing for windows not yet due.
 */
export class WindowShard {
  private readonly marks = new Map<number, PartitionMark>();
  /** Per origin (a partition, or a backfill's partition), the last batch applied (its last event sequence): replays are dropped. */
  private readonly applied = new Map<string, number>();
  private readonly fires = new EventTimeTimers();
  private readonly purges = new EventTimeTimers();
  private current = -Infinity;

  constructor(
    readonly id: number,
    private readonly actors: ActorSystem<WindowMessage>,
    private readonly timing: (metric: string) => WindowTiming,
  ) {}

  get watermark(): number {
    return this.current;
  }

  /** Applies one router batch's partials, unless this batch (or a later one) was applied already. */
  applyBatch(origin: string, last: number, partials: WindowPartial[]): boolean {
    if (last <= (this.applied.get(origin) ?? 0)) return false;
    this.applied.set(origin, last);
    for (const partial of partials) this.apply(partial);
    return true;
  }

  apply(partial: WindowPartial): void {
    this.schedule(partial.key, partial.metric, partial.end, true);
    this.actors.send(partial.key, { type: "partial", partial, watermark: this.current });
  }

  /** Registers a window's event-time timers (also used to rebuild them after a restart). */
  schedule(key: string, metric: string, end: number, open: boolean): void {
    const { latenessMs, horizonMs } = this.timing(metric);
    if (open && end + latenessMs > this.current) this.fires.add(end + latenessMs, key);
    // A window created long after its time (by a backfill) is kept a horizon from its creation.
    this.purges.add(Math.max(end + latenessMs, this.current) + horizonMs + purgeMarginMs, key);
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
    for (const [origin, last] of state.applied) this.applied.set(String(origin), last);
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
    for (const key of this.fires.due(next)) this.actors.send(key, { type: "fire", watermark: next });
    for (const key of this.purges.due(next)) this.actors.send(key, { type: "purge" });
  }

  /** Windows waiting for their final result. */
  get pendingTimers(): number {
    return this.fires.size;
  }
}

export interface ShardState {
  watermark: number | null;
  applied: [origin: string, last: number][];
  marks: [partition: number, watermark: number | null, idle: boolean][];
}

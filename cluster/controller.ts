import { desiredOwners } from "./placement.js";
import type { OwnershipTable } from "./ownership.js";

/** What hosts the units (shards, partitions) this node owns. */
export interface UnitHost {
  /** Start serving `unit`; its ownership at `epoch` is already claimed. */
  start(unit: string, epoch: number): Promise<void>;
  /** Stop serving it gracefully (a last checkpoint), before its ownership is released. */
  stop(unit: string): Promise<void>;
  /** Stop at once and write nothing more: a newer owner has it. */
  abandon(unit: string): Promise<void>;
}

export interface ControllerOptions {
  /** How often the node compares what it owns with what placement says it should. */
  intervalMs: number;
  /** At most this many units handed to another live node per round (a joining node causes no storm). */
  maxMovesPerRound: number;
  /** How many claimed units start at once (default 8). */
  startConcurrency?: number;
  log(message: string): void;
}

/** What one rebalance round did, for status and tests. */
export interface RoundReport {
  claimed: string[];
  released: string[];
  abandoned: string[];
}

/**
 * Ownership of units by one node: every round it reads the live members and the ownership table,
 * computes where every unit belongs (consistent hashing over the live members), lets go of units
 * that belong elsewhere (checkpoint, then release), and claims units that belong here once their
 * owner has released them or has died (its heartbeat expired). Claims are compare-and-set in the
 * ownership table and carry an epoch: a unit is never started before its previous owner stopped,
 * and a stale owner's writes are refused downstream by that epoch.
 */
export class PlacementController {
  private readonly hosted = new Map<string, number>();
  private timer?: NodeJS.Timeout;
  private running?: Promise<unknown>;
  private stopped = false;
  moves = 0;

  constructor(
    private readonly me: string,
    private readonly units: readonly string[],
    private readonly host: UnitHost,
    private readonly table: OwnershipTable,
    /** The members whose heartbeat has not expired; a leaving one still owns, but gets nothing new. */
    private readonly liveMembers: () => Promise<{ id: string; leaving?: boolean }[]>,
    private readonly options: ControllerOptions,
  ) {}

  /** Units hosted here, with their epochs. */
  get owned(): ReadonlyMap<string, number> {
    return this.hosted;
  }

  async start(): Promise<void> {
    await this.round();
    this.timer = setInterval(() => void this.round(), this.options.intervalMs);
  }

  /** Graceful: every unit is stopped and released, so the others take over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.running;
    for (const [unit, epoch] of [...this.hosted]) {
      this.hosted.delete(unit);
      await this.host.stop(unit).catch((e) => this.options.log(`${unit}: stop failed: ${(e as Error).message}`));
      await this.table.release(unit, this.me, epoch).catch(() => false);
    }
  }

  /** A unit's writes were refused as stale: another node owns it now. */
  fenced(unit: string): void {
    if (!this.hosted.delete(unit)) return;
    this.options.log(`${unit}: fenced by a newer owner; letting go`);
    void this.host.abandon(unit).catch(() => undefined);
  }

  /** One round; rounds never overlap. */
  round(): Promise<RoundReport | undefined> {
    if (this.stopped) return Promise.resolve(undefined);
    const previous = this.running ?? Promise.resolve();
    const next = previous.then(() => (this.stopped ? undefined : this.rebalance())).catch((e) => {
      this.options.log(`rebalance: ${(e as Error).message}`);
      return undefined;
    });
    this.running = next;
    return next;
  }

  private async rebalance(): Promise<RoundReport> {
    const report: RoundReport = { claimed: [], released: [], abandoned: [] };
    const members = await this.liveMembers();
    const live = new Set(members.map((m) => m.id));
    const placeable = members.filter((m) => !m.leaving && m.id !== this.me).map((m) => m.id);
    if (!this.stopped) placeable.push(this.me);
    const owners = await this.table.all();
    const desired = desiredOwners(this.units, placeable);

    for (const [unit, epoch] of [...this.hosted]) {
      const entry = owners.get(unit);
      if (entry && (entry.node !== this.me || entry.epoch !== epoch)) {
        this.hosted.delete(unit);
        await this.host.abandon(unit).catch(() => undefined);
        report.abandoned.push(unit);
      }
    }

    // Handed over in parallel (each is a last checkpoint and a release), at most the cap per round.
    const leaving = [...this.hosted].filter(([unit]) => desired.get(unit) !== this.me).slice(0, this.options.maxMovesPerRound);
    for (const [unit] of leaving) this.hosted.delete(unit);
    await inParallel(leaving, leaving.length, async ([unit, epoch]) => {
      try {
        await this.host.stop(unit);
      } finally {
        await this.table.release(unit, this.me, epoch);
      }
      report.released.push(unit);
    });

    const claimed: [string, number][] = [];
    for (const unit of this.units) {
      if (desired.get(unit) !== this.me || this.hosted.has(unit) || this.stopped) continue;
      const entry = owners.get(unit);
      const free = !entry || entry.node === null || entry.node === this.me || !live.has(entry.node);
      if (!free) continue;
      const epoch = await this.table.claim(unit, this.me, entry?.revision ?? 0);
      if (epoch === undefined) continue;
      this.hosted.set(unit, epoch);
      claimed.push([unit, epoch]);
    }
    // Starting a unit is a few JetStream round trips (more on a replicated cluster): in parallel.
    await inParallel(claimed, this.options.startConcurrency ?? 8, async ([unit, epoch]) => {
      try {
        await this.host.start(unit, epoch);
        report.claimed.push(unit);
      } catch (e) {
        this.options.log(`${unit}: start failed, releasing: ${(e as Error).message}`);
        this.hosted.delete(unit);
        await this.host.abandon(unit).catch(() => undefined);
        await this.table.release(unit, this.me, epoch).catch(() => false);
      }
    });
    this.moves += report.claimed.length;
    return report;
  }
}

async function inParallel<T>(items: readonly T[], concurrency: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await work(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
}

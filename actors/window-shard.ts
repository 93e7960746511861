import type { ActorSystem } from "../runtime/actor-system.js";
import { Turns } from "../runtime/turns.js";
import { actorKey, parseActorKey, saltOfKey, seriesShardKey, shardOfKey } from "./actor-keys.js";
import { EventTimeList, EventTimeTimers } from "./event-time-timers.js";
import { parentWindow, rollupLevel, type RollupRule } from "./rollups.js";
import type { WindowPartial } from "./router.js";
import { otherDims, SeriesAdmission, type AdmissionWindow } from "./series-limit.js";
import type { WindowActorEnv, WindowMessage } from "./window-actor.js";
import type { WindowResult } from "./window-result.js";
import { storedWindowMayWait, storedWindowWatermark } from "./window-snapshot.js";
import { WindowTable } from "./window-table.js";

/** What one event partition last said about its event-time progress. */
export interface PartitionMark {
  /** Max event time seen minus the allowed out-of-orderness (or the idle clock, see `idle`). */
  watermark: number;
  /** No events for the idleness timeout: it no longer holds the watermark back. */
  idle: boolean;
}

/**
 * What a shard needs of a metric's rule: when its windows fire (end + lateness) and are forgotten
 * (end + lateness + horizon), its rollups, and its series limit.
 */
export interface WindowTiming extends RollupRule {
  latenessMs: number;
  horizonMs: number;
  groupBy?: readonly string[];
  maxSeries?: number;
}

export interface WindowShardOptions {
  /** Shards of the cluster: each admits its share of a `maxSeries` limit (`seriesQuota`). */
  shardCount?: number;
  /** The `_audit` partial that records `n` events folded into `__other__` in a window starting at `start`. */
  foldedAudit?: (start: number, n: number) => WindowPartial;
  /**
   * Partials this shard produced for another shard's windows (the `__other__` series and the
   * audit, when a series is folded): sent on under `id`, stable across replays, so the send is
   * de-duplicated. Without it (a single shard in tests) they are applied here.
   */
  forward?: (partials: WindowPartial[], id: string) => void;
  /**
   * The window actors' environment: given, the shard keeps the open windows of plain rules in a
   * table rather than an actor each (`WindowTable`); without it, every window is an actor.
   */
  table?: WindowActorEnv;
  /**
   * Windows told to fire (or purge) at a time: between two slices `mark` waits for `pause`, so a
   * minute closing at hundreds of thousands of windows does not hold the event loop for seconds
   * (other shards' mailboxes, routers, acks and provisional results go on in between).
   */
  fireSlice?: number;
  /** What `mark` waits for between slices (default: a turn of the event loop, taken in turn with the other shards of the process). */
  pause?: () => Promise<void>;
  /**
   * Purge every window through its actor, as before `ActorSystem.forget` (a store read per
   * passivated window): for benchmarks and tests comparing the two.
   */
  purgeByMessage?: boolean;
}

/** Windows fired per slice by default: ~5–10 ms of work for count windows here. */
export const defaultFireSlice = 1_000;

/** The shards of a process take turns between their slices (`Turns`): one slice per turn of the event loop. */
const closeTurns = new Turns();
const nextTurn = () => closeTurns.next();

/**
 * A window's state is purged this long after its horizon, not at it: the router judges
 * lateness by its own partition's watermark, which may trail the shard's a little.
 */
export const purgeMarginMs = 10 * 60_000;

/**
 * One shard's event time: the watermark over the partitions that feed it, and the event-time
 * timers of its windows (Flink's timer service). A window is told to fire when the watermark
 * passes its end + lateness, and to forget its state once past its correction horizon, so a
 * watermark step costs nothing for windows not yet due. It also admits series under a rule's
 * `maxSeries` (folding the rest into `__other__`), in mailbox order.
 */
export class WindowShard {
  private readonly marks = new Map<number, PartitionMark>();
  /** Per origin (a partition, or a backfill's partition), the last batch applied (its last event sequence): replays are dropped. */
  private readonly applied = new Map<string, number>();
  /** Fire timers by rollup level (0: the rules' own windows, 1: first rollups…): fired level by level. */
  private readonly fires: EventTimeTimers[] = [];
  /** The fire timers of rows (`opensRow`), registered once each: fired with level 0, after its actors'. */
  private readonly rowFires = new EventTimeList();
  private readonly purges = new EventTimeTimers();
  /**
   * Series whose windows may still be open at their purge: a hot series' windows wait for their
   * sub-actors' last shares, and its rollup windows for those (holds stay within a series).
   * Their purges go through their actors, which keep an open window's state. Any other window
   * is final by then (its fire comes first, and only sub-actors or held finer windows make it
   * wait), so its state is dropped unread (`ActorSystem.forget`). By series, not window, and
   * never dropped while the process lives: a window kept open at its purge may take partials
   * later, and a few bytes per hot series ever seen is all it costs. Rebuilt at a restart from
   * the stored windows (`restoreWindow`).
   */
  private readonly waitingSeries = new Set<string>();
  private readonly admission = new SeriesAdmission();
  /** Open salted sub-actors: each gets a tick at every watermark step, to hand over what it gathered. */
  private readonly subs = new Set<string>();
  /** Events folded into `__other__` per metric, since the shard's state began (checkpointed). */
  private readonly folded = new Map<string, number>();
  private readonly shardCount: number;
  private current = -Infinity;
  private readonly table?: WindowTable;

  constructor(
    readonly id: number,
    private readonly actors: ActorSystem<WindowMessage>,
    private readonly timing: (metric: string) => WindowTiming,
    private readonly options: WindowShardOptions = {},
  ) {
    this.shardCount = options.shardCount ?? 1;
    if (options.table) {
      const table = new WindowTable({
        ...options.table,
        // A window leaving the table gets its purge timer now (`opensRow`), which also tells the shard it may have state.
        handOff: (key, state, metric, end) => {
          this.purges.add(this.purgeAt(end, this.timing(metric)), key);
          actors.adopt(key, state);
        },
        send: (key, message) => actors.send(key, message),
      });
      actors.holder = table;
      this.table = table;
    }
  }

  /** The table's open windows that match a query, as provisional results (`WindowTable.query`). */
  openRows(metric: string, window: string, from: number, to: number, where: Record<string, string>): WindowResult[] {
    return this.table?.query(metric, window, from, to, where) ?? [];
  }

  /** Open windows, as rows of the table or as actors. */
  get activeWindows(): number {
    return this.actors.activeCount + (this.table?.size ?? 0);
  }

  get watermark(): number {
    return this.current;
  }

  /** Applies one router batch's partials, unless this batch (or a later one) was applied already. */
  applyBatch(origin: string, last: number, partials: WindowPartial[]): boolean {
    if (last <= (this.applied.get(origin) ?? 0)) return false;
    this.applied.set(origin, last);
    const away: WindowPartial[] | undefined = this.options.forward ? [] : undefined;
    for (const partial of partials) this.apply(partial, away);
    if (away && away.length > 0) this.options.forward!(away, `${origin}:${last}:${this.id}`);
    return true;
  }

  /** One partial, outside any batch (tests): with a `forward` port, use `applyBatch`. */
  apply(incoming: WindowPartial, away?: WindowPartial[]): void {
    if (this.options.forward && !away) throw new Error("a shard that forwards applies whole batches (applyBatch)");
    for (const partial of this.admit(incoming)) {
      if (away && shardOfKey(partial.key, this.shardCount) !== this.id) away.push(partial);
      else this.applyHere(partial);
    }
  }

  /**
   * Whether `partials` may be applied while a `mark` still fires (and purges) the windows it made
   * due, ahead of them, with the same outcome as after them: each is an ordinary partial of a
   * window that closes after the current watermark, so neither it nor a rollup window above it
   * (which closes no earlier) is among those due, and it is not a hot series' hand-over (sub-actor
   * ticks follow the mark) nor under a series limit (admission advances at the mark's end). Why:
   * a minute closing a million windows takes seconds, and the next minute's events need not wait
   * for it (README, "Many windows").
   */
  overtakesClose(partials: readonly WindowPartial[]): boolean {
    for (const p of partials) {
      if (p.salts || p.fromSub || p.hold || p.release || saltOfKey(p.key) !== undefined) return false;
      const rule = this.timing(p.metric);
      if (rule.maxSeries !== undefined || p.end + rule.latenessMs <= this.current) return false;
    }
    return true;
  }

  /** Partials another shard forwarded here (already admitted there). */
  applyForwarded(partials: WindowPartial[]): void {
    for (const partial of partials) this.applyHere(partial);
  }

  private applyHere(partial: WindowPartial): void {
    // A router's marker or a sub-actor's hand-over: the series' windows may wait.
    if (partial.salts || partial.fromSub) this.waitingSeries.add(seriesShardKey(partial.key));
    const table = this.table;
    // A row's timers (and its rollup windows') were registered with its first partial.
    if (table?.has(partial.key)) {
      if (table.takes(partial)) return table.apply(partial, this.current);
      table.release(partial.key);
    }
    if (table?.takes(partial) && this.opensRow(partial)) return table.open(partial, this.current);
    const fresh = this.schedule(partial.key, partial.end, true);
    this.actors.send(partial.key, { type: "partial", partial, watermark: this.current }, fresh);
  }

  /**
   * Whether `partial` opens a row: its window is new here (no purge timer: `timers`) and open. Its
   * fire timer and its rollup windows' timers are registered; not its purge timer, which costs ~30
   * bytes a window: it comes when the window leaves the table (`handOff`).
   */
  private opensRow(partial: WindowPartial): boolean {
    const rule = this.timing(partial.metric);
    const closesAt = partial.end + rule.latenessMs;
    if (this.current > closesAt || this.purges.has(this.purgeAt(partial.end, rule), partial.key)) return false;
    if (closesAt > this.current) this.rowFires.add(closesAt, partial.key);
    // (Taking the key apart is most of what this costs a window, when there is nothing above it.)
    if ((rule.rollups?.length ?? 0) === 0) return true;
    const { metric, window, start, dimsId } = parseActorKey(partial.key);
    this.rollupTimers(rule, metric, window, start, dimsId, this.current);
    return true;
  }

  /**
   * Registers the event-time timers of a window and of the rollup windows above it: a rollup
   * window's state only arrives when a finer window finalizes, but its timers start with its
   * first base partial. Also rebuilds them after a restart (`restoreWindow`). Returns whether
   * the window is new here (see `timers`).
   */
  schedule(key: string, end: number, open: boolean, since = this.current): boolean {
    const { metric, window, start, dimsId, salt } = parseActorKey(key);
    const rule = this.timing(metric);
    const fresh = this.timers(key, end, open, rule, rollupLevel(rule, window), since);
    // A salted sub-actor hands its share to its window, which rolls up: it has no rollups of its own.
    if (salt !== undefined) {
      if (open) this.subs.add(key);
      return fresh;
    }
    this.rollupTimers(rule, metric, window, start, dimsId, since);
    return fresh;
  }

  /** The timers of the rollup windows above a window (open: their state comes when finer windows go final). */
  private rollupTimers(rule: WindowTiming, metric: string, window: string, start: number, dimsId: string, since: number): void {
    for (let up = parentWindow(rule, window, start); up; up = parentWindow(rule, up.window.id, up.start)) {
      this.timers(actorKey(metric, up.window.id, up.start, dimsId), up.start + up.window.sizeMs, true, rule, rollupLevel(rule, up.window.id), since);
    }
  }

  /**
   * A window found in the stored state after a restart: its timers, and its series as admitted.
   * Every stored window must be restored before partials are applied: a window the shard does
   * not know is taken for new, and its actor starts empty (`timers`).
   */
  restoreWindow(key: string, end: number, open: boolean, stored?: Uint8Array): void {
    // Its purge counted from the watermark it last saw, not the restart's: a node restarted more
    // often than a horizon would otherwise never purge a window closed before its restarts.
    const seen = stored ? storedWindowWatermark(stored) : NaN;
    const since = Number.isFinite(seen) ? Math.min(seen, this.current) : this.current;
    this.schedule(key, end, open, since);
    // (A final window stays final. Without its bytes, the safe guess.)
    if (open && (!stored || storedWindowMayWait(stored))) this.waitingSeries.add(seriesShardKey(key));
    if (open && stored && this.table) this.table.restore(key, stored);
    const { metric, dimsId } = parseActorKey(key);
    const rule = this.timing(metric);
    if (rule.maxSeries === undefined || dimsId === otherDims(rule.groupBy ?? []).dimsId) return;
    this.admission.restore(this.windowsOf(key, end, rule, since), dimsId);
  }

  /**
   * Returns true for a window this shard never had state for, so its actor needs no store read.
   * Every window with state has a purge timer (from its first partial, or from `restoreWindow`
   * after a restart) until it is purged; and while its close is ahead of the watermark its purge
   * time is always the same (`purgeAt`), so a key missing there is a key never seen. Past its
   * close the purge time depends on the watermark, and the answer is a safe false.
   */
  private timers(key: string, end: number, open: boolean, rule: WindowTiming, level: number, since: number): boolean {
    const { latenessMs } = rule;
    if (open && end + latenessMs > this.current) (this.fires[level] ??= new EventTimeTimers()).add(end + latenessMs, key);
    const added = this.purges.add(this.purgeAt(end, rule, since), key);
    return added && this.current <= end + latenessMs;
  }

  /**
   * A horizon after the window's close; a window created long after its time (by a backfill) is
   * kept a horizon from its creation (`since`: the watermark then).
   */
  private purgeAt(end: number, rule: WindowTiming, since = this.current): number {
    return Math.max(end + rule.latenessMs, since) + rule.horizonMs + purgeMarginMs;
  }

  /**
   * Under a `maxSeries` limit, a partial of a series this shard has no room for in its window
   * (or in a rollup window above it) is re-keyed to the `__other__` series, and counted.
   */
  private admit(partial: WindowPartial): WindowPartial[] {
    const rule = this.timing(partial.metric);
    const groupBy = rule.groupBy ?? [];
    if (rule.maxSeries === undefined || groupBy.length === 0) return [partial];
    const other = otherDims(groupBy);
    const { dimsId, salt } = parseActorKey(partial.key);
    // A hot series' sub-actors share its admission (its window's marker partial is admitted).
    if (dimsId === other.dimsId || salt !== undefined) return [partial];
    const quota = seriesQuota(rule.maxSeries, this.id, this.shardCount);
    if (this.admission.admit(this.windowsOf(partial.key, partial.end, rule), dimsId, quota)) return [partial];
    this.folded.set(partial.metric, (this.folded.get(partial.metric) ?? 0) + partial.agg.count);
    const folded = { ...partial, key: actorKey(partial.metric, partial.window, partial.start, other.dimsId), dims: other.dims };
    const audit = this.options.foldedAudit?.(partial.start, partial.agg.count);
    return audit ? [folded, audit] : [folded];
  }

  /** A window and the rollup windows above it, as the series limit counts them. */
  private windowsOf(key: string, end: number, rule: WindowTiming, since = this.current): AdmissionWindow[] {
    const { metric, window, start } = parseActorKey(key);
    const out = [{ id: `${metric}\t${window}\t${start}`, dropAt: this.purgeAt(end, rule, since) }];
    for (let up = parentWindow(rule, window, start); up; up = parentWindow(rule, up.window.id, up.start)) {
      out.push({ id: `${metric}\t${up.window.id}\t${up.start}`, dropAt: this.purgeAt(up.start + up.window.sizeMs, rule, since) });
    }
    return out;
  }

  /** What must survive a restart besides the actors; timers and admitted series are rebuilt from the actors' state. */
  save(): ShardState {
    return {
      watermark: Number.isFinite(this.current) ? this.current : null,
      applied: [...this.applied],
      marks: [...this.marks].map(([p, m]) => [p, Number.isFinite(m.watermark) ? m.watermark : null, m.idle]),
      folded: [...this.folded],
    };
  }

  restore(state: ShardState): void {
    this.current = state.watermark ?? -Infinity;
    for (const [origin, last] of state.applied) this.applied.set(String(origin), last);
    for (const [p, wm, idle] of state.marks) this.marks.set(p, { watermark: wm ?? -Infinity, idle });
    for (const [metric, n] of state.folded ?? []) this.folded.set(metric, n);
  }

  /**
   * Salted sub-actors hand over what they gathered: called for every watermark message in the
   * mailbox (a fixed cadence, and the same on a replay).
   */
  tick(): void {
    for (const key of this.subs) this.actors.send(key, { type: "tick" });
  }

  /**
   * Record a partition's progress; fires every window the shard watermark passed, level by level:
   * the rules' own windows first, then (once every actor is idle, so every finer window due has
   * handed its final state up) the first rollups, then the next. The last minute of an hour is due
   * at the same watermark as the hour, and the hour must not finalize without it.
   */
  mark(partition: number, mark: PartitionMark): Promise<void> {
    return this.markAll([[partition, mark]]);
  }

  /**
   * `mark` of several partitions at once (one mailbox message): every window due at the
   * watermark they reach together fires in one pass; then, with `tick`, the sub-actors tick.
   * The watermark moves at once, and the pass (and tick) waits for the passes of earlier calls:
   * so a close under way holds up nothing but the partials that cannot overtake it
   * (`overtakesClose`, judged against the newest watermark), not even the next marks.
   */
  markAll(marks: Iterable<readonly [partition: number, mark: PartitionMark]>, tick = false): Promise<void> {
    for (const [partition, mark] of marks) this.marks.set(partition, mark);
    const active = [...this.marks.values()].filter((m) => !m.idle);
    const considered = active.length > 0 ? active : [...this.marks.values()];
    const next = Math.min(...considered.map((m) => m.watermark));
    const advanced = next > this.current;
    if (advanced) this.current = next;
    if (!advanced && !tick && this.closes === undefined) return Promise.resolve();
    const run = (this.closes ?? Promise.resolve()).then(async () => {
      if (advanced) await this.fire(next);
      if (tick) this.tick();
    });
    // A failed pass fails every later one: the shard recovers from its checkpoint.
    const closes = run.finally(() => {
      if (this.closes === closes) this.closes = undefined;
    });
    this.closes = closes;
    closes.catch(() => undefined); // (the caller of `run` sees the failure; later passes are chained to `closes`)
    return run;
  }

  /** Passes of `markAll` under way or waiting, the last one's (it settles after all of them). */
  private closes?: Promise<void>;

  /** Fires the windows due at `next` (the watermark), then purges those past their horizon. */
  private async fire(next: number): Promise<void> {
    const slice = this.options.fireSlice ?? defaultFireSlice;
    const pause = this.options.pause ?? nextTurn;
    for (let level = 0; level < Math.max(1, this.fires.length); level++) {
      const due = [...(this.fires[level]?.due(next) ?? [])];
      if (level === 0) for (const key of this.rowFires.due(next)) due.push(key);
      if (due.length === 0) continue;
      if (level > 0) await this.actors.idle();
      const fire: WindowMessage = { type: "fire", watermark: next };
      for (let i = 0; i < due.length; i++) {
        // Nothing else reaches the due windows meanwhile but their own processing-time timers
        // (provisional results); partials applied in between are for windows not due
        // (`overtakesClose`): the finals are the same, sliced or not.
        if (i > 0 && i % slice === 0) await pause();
        const key = due[i]!;
        this.subs.delete(key);
        if (!this.table?.fire(key, next)) this.actors.send(key, fire);
      }
    }
    const purge: WindowMessage = { type: "purge" };
    const byMessage = this.options.purgeByMessage === true;
    const waiting = this.waitingSeries;
    let n = 0;
    for (const key of [...this.purges.due(next)]) {
      if (n++ > 0 && n % slice === 0) await pause();
      // A row is open, so never due for a purge (that is a horizon after its close).
      if (this.table?.has(key)) continue;
      // A passivated window that cannot be open is dropped without reading its state (200k
      // reads a minute at 200k windows a minute). An active one, with its fire or a late partial
      // maybe still queued, and one that may wait, are told: their actor decides, in order.
      // (A salted sub-actor's series id has its salt: it drops its state whatever it holds.)
      if (byMessage || (waiting.size > 0 && waiting.has(seriesShardKey(key))) || !this.actors.forget(key)) this.actors.send(key, purge);
    }
    this.admission.advance(next);
  }

  /** Windows waiting for their final result. */
  get pendingTimers(): number {
    return this.fires.reduce((n, timers) => n + timers.size, this.rowFires.size);
  }

  /** Events folded into `__other__` per metric (README, "Cardinality"). */
  get foldedByMetric(): ReadonlyMap<string, number> {
    return this.folded;
  }

  /** Windows whose admitted series are tracked for a `maxSeries` limit. */
  get limitedWindows(): number {
    return this.admission.size;
  }
}

/**
 * How many series of a window shard `shard` admits under a limit of `maxSeries`: an even share,
 * the remainder going one each to the first shards, so the shares add up to exactly `maxSeries`
 * (rounding every share up could exceed it by up to `shardCount - 1`). A series belongs to one
 * shard, and counting series globally would need a coordinator: so the limit is never exceeded,
 * but a shard whose share is full folds new series while others may still have room.
 */
export function seriesQuota(maxSeries: number, shard: number, shardCount: number): number {
  return Math.floor(maxSeries / shardCount) + (shard % shardCount < maxSeries % shardCount ? 1 : 0);
}

export interface ShardState {
  watermark: number | null;
  applied: [origin: string, last: number][];
  marks: [partition: number, watermark: number | null, idle: boolean][];
  /** Absent in checkpoints written before series limits existed. */
  folded?: [metric: string, events: number][];
}

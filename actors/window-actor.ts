import type { Actor, ActorContext, ActorKind } from "../runtime/actor.js";
import { aggValues, emptyAgg, isBasicAggregate, mergeAgg, type BasicAgg } from "./aggregates.js";
import { resolveAggregation, type ResultValue } from "./aggregations/aggregation.js";
import { actorKey, parseActorKey, saltOfKey, startOfKey, unsaltedKey } from "./actor-keys.js";
import { parentWindow } from "./rollups.js";
import type { WindowPartial } from "./router.js";
import type { MetricRule } from "./rules.js";
import type { EncodedResult, ResultStatus, WindowIdentity, WindowResult } from "./window-result.js";
import { decodeWindowSnapshot, encodeWindowSnapshot } from "./window-snapshot.js";
import { windowSizeMs } from "./windows.js";

export type WindowMessage =
  /**
   * Events combined by a router, or handed up by a finer window of a rollup; `watermark` is the
   * shard's event-time watermark on arrival. `onTime`: handed up by a finer window that became
   * final on time, so its events were on time here too (this window ends no earlier, with the
   * same lateness): they never make this window final at once, its own timer will.
   */
  | { type: "partial"; partial: WindowPartial; watermark: number; onTime?: boolean }
  /** The watermark passed this window's end + allowed lateness (an event-time timer fired). */
  | { type: "fire"; watermark: number }
  /** The provisional throttle elapsed (a processing-time timer). */
  | { type: "emit" }
  /** The watermark passed the window's correction horizon: its state can go. */
  | { type: "purge" }
  /** A salted sub-actor hands what it gathered since the last tick to its window (the shard's watermark cadence). */
  | { type: "tick" };

export interface WindowActorEnv {
  rule(metric: string): MetricRule | undefined;
  emit(result: WindowResult): void;
  /**
   * A result of a window table's row (provisional or final), as its JSON (`EncodedResult`);
   * without it, rows emit their results through `emit` as actors do.
   */
  emitEncoded?(result: EncodedResult): void;
  /** JSON fields an encoded final ends with (`,"shard":3,"epoch":7`: the host's stamp, as `emit` stamps a result). */
  encodedStamp?: string;
  /**
   * A salted sub-actor's hand-over to its window, which lives in another shard: sent exactly once
   * under `id` (stable across replays).
   */
  forward?(partial: WindowPartial, id: string): void;
  /** Minimum spacing of provisional results and of corrections. */
  emitIntervalMs: number;
  now(): number;
}

/**
 * A window's state in memory. Its start and end are not in it: they follow from its key and
 * window id (`start`, `end` below), and two boxed numbers less per window count when a node holds a
 * million (README, "Memory"). Its snapshot still carries both.
 */
interface WindowState extends Omit<WindowIdentity, "start" | "end"> {
  agg: BasicAgg;
  /** The other aggregates' states, by state key; absent until one arrives (a count-only window never has any: it saves an object per window). */
  states?: Record<string, unknown>;
  status: ResultStatus | "open";
  revision: number;
  lateCount: number;
  watermark: number;
  /** A hot series' window: the sub-actors it waits for, the last hand-over seen from each (by sub-actor life), those done. */
  subs?: { expect: number[]; seen: Record<string, number>; done: number[] };
  /** Finer windows of this rollup window that are due but still wait for their sub-actors: this one waits for them. */
  holds?: string[];
  /** Due (its timer fired, or it arrived after its time) and waiting for sub-actors or held windows. */
  awaiting?: boolean;
  /** A salted sub-actor: hand-overs made so far (its state holds only what is not handed over yet). */
  handed?: number;
  /** A salted sub-actor: the shard watermark it was created at, which tells its lives apart (one may follow a purge). */
  born?: number;
}

/**
 * One window of one series: merges partials, emits provisional results (throttled, only on
 * change) while open, a final result when its event-time timer fires, and a correction for each
 * late partial after that. It passivates once final, and is reactivated from its snapshot by a late
 * partial.
 *
 * A window of a rule with rollups also hands its contribution up to the next coarser window of
 * the same series (`1m` → `1h` → `1d`, README "Rollups"): its whole state when it becomes final,
 * then each late partial it takes after that, as it came. So the coarser window receives every
 * event exactly once, and a correction flows all the way up. A rollup window is this same actor:
 * what it is told is a partial like any other.
 */
export class WindowActor implements Actor<WindowMessage> {
  private changed = false;
  private emitPending = false;
  private lastEmitAt = -Infinity;
  /** Which sub-actor of a hot series' window this is, if it is one. */
  private readonly salt?: number;

  constructor(
    private readonly key: string,
    private state: WindowState | undefined,
    private readonly env: WindowActorEnv,
  ) {
    this.salt = saltOfKey(key);
  }

  /** Where the window starts: its key says (not kept in its state, see WindowState). */
  private get start(): number {
    return startOfKey(this.key);
  }

  private get end(): number {
    return this.start + windowSizeMs(this.state!.window);
  }

  receive(message: WindowMessage, ctx: ActorContext<WindowMessage>): void {
    if (this.salt !== undefined) return this.receiveAsSub(message, ctx);
    switch (message.type) {
      case "partial":
        return this.onPartial(message.partial, message.watermark, message.onTime === true, ctx);
      case "fire":
        return this.onFire(message.watermark, ctx);
      case "emit":
        this.emitPending = false;
        if (this.changed && this.state?.status === "open") this.send();
        return;
      case "purge":
        if (this.state && this.state.status !== "open") this.state = undefined;
        return ctx.passivate();
      case "tick":
        return;
    }
  }

  /**
   * A salted sub-actor (README, "Hot keys") merges its share of a hot series' window and hands
   * it to the window: what it gathered at every tick (the shard's watermark cadence, so the same
   * on a replay), everything left with `done` when its own timer fires, and each late partial
   * after that as it comes. It emits no results of its own.
   */
  private receiveAsSub(message: WindowMessage, ctx: ActorContext<WindowMessage>): void {
    switch (message.type) {
      case "partial": {
        const state = (this.state ??= { ...this.newState(message.partial, message.watermark), born: message.watermark });
        this.merge(message.partial);
        if (state.status !== "open") return this.handOver(true, ctx);
        const closesAt = this.end + (this.env.rule(state.metric)?.latenessMs ?? 0);
        if (message.watermark >= closesAt) {
          state.status = "final";
          return this.handOver(true, ctx);
        }
        return;
      }
      case "tick":
        if (this.state?.status === "open" && this.state.agg.count > 0) this.handOver(false, ctx);
        return;
      case "fire":
        if (!this.state || this.state.status !== "open") return;
        this.state.status = "final";
        return this.handOver(true, ctx);
      case "emit":
        return;
      case "purge":
        this.state = undefined;
        return ctx.passivate();
    }
  }

  private handOver(done: boolean, ctx: ActorContext<WindowMessage>): void {
    const state = this.state!;
    const n = (state.handed = (state.handed ?? 0) + 1);
    const key = unsaltedKey(this.key);
    const partial: WindowPartial = {
      key,
      metric: state.metric,
      window: state.window,
      start: this.start,
      end: this.end,
      dims: state.dims,
      agg: state.agg,
      states: encodeStates(state.states ?? {}),
      fromSub: { salt: this.salt!, n, done, born: state.born ?? state.watermark },
    };
    state.agg = emptyAgg();
    state.states = undefined;
    this.env.forward!(partial, `${this.key}@${partial.fromSub!.born}#${n}`);
    if (state.status !== "open") ctx.passivate();
  }

  private newState(partial: WindowPartial, watermark: number): WindowState {
    return {
      metric: partial.metric,
      window: partial.window,
      dims: partial.dims,
      agg: emptyAgg(),
      status: "open",
      revision: 0,
      lateCount: 0,
      watermark,
    };
  }

  private merge(partial: WindowPartial): void {
    const state = this.state!;
    mergeAgg(state.agg, partial.agg);
    for (const [stateKey, incoming] of Object.entries(partial.states ?? {})) {
      const aggregation = resolveAggregation(stateKey);
      const from = decodeState(aggregation, incoming);
      const states = (state.states ??= {});
      states[stateKey] = stateKey in states ? aggregation.merge(states[stateKey], from) : from;
    }
  }

  /**
   * A hot series' window hears which sub-actors have its events (router markers) and what they
   * hand over; a rollup window hears which finer windows it must wait for (holds). Returns false
   * for a hand-over already taken (a replay).
   */
  private track(partial: WindowPartial): boolean {
    const state = this.state!;
    if (partial.hold && !(state.holds ??= []).includes(partial.hold)) state.holds.push(partial.hold);
    if (partial.release && state.holds) state.holds = state.holds.filter((k) => k !== partial.release);
    if (!partial.salts && !partial.fromSub) return true;
    const subs = (state.subs ??= { expect: [], seen: {}, done: [] });
    for (const salt of partial.salts ?? []) if (!subs.expect.includes(salt)) subs.expect.push(salt);
    const from = partial.fromSub;
    if (!from) return true;
    const life = `${from.salt}@${from.born}`;
    if (from.n <= (subs.seen[life] ?? 0)) return false;
    subs.seen[life] = from.n;
    if (!subs.expect.includes(from.salt)) subs.expect.push(from.salt);
    if (from.done && !subs.done.includes(from.salt)) subs.done.push(from.salt);
    return true;
  }

  /** Something this window must wait for before it is final: a sub-actor not done, or a held finer window. */
  private waiting(): boolean {
    const { subs, holds } = this.state!;
    return (!!subs && !subs.expect.every((salt) => subs.done.includes(salt))) || (holds?.length ?? 0) > 0;
  }

  /** Due, but it must wait: so must the rollup window above it (it fires at the same watermark or later). */
  private await(watermark: number, ctx: ActorContext<WindowMessage>): void {
    if (this.state!.awaiting) return;
    this.state!.awaiting = true;
    this.handUp({ agg: emptyAgg(), hold: this.key }, watermark, true, ctx);
  }

  snapshot(): Uint8Array | undefined {
    if (!this.state) return undefined;
    const state = this.state;
    return encodeWindowSnapshot(state, this.start, this.end, state.states && encodeStates(state.states));
  }

  private onPartial(partial: WindowPartial, watermark: number, onTime: boolean, ctx: ActorContext<WindowMessage>) {
    const state = (this.state ??= this.newState(partial, watermark));
    if (!this.track(partial)) return;
    // A marker or an empty last hand-over changes nothing: no correction for it.
    if (partial.agg.count === 0 && state.status !== "open") return;
    state.watermark = Math.max(state.watermark, watermark);
    // A late partial goes up as it came: copied before merging, which may keep the objects it is given.
    const delta = state.status !== "open" ? { agg: { ...partial.agg }, states: encodeStates(partial.states ?? {}) } : undefined;
    this.merge(partial);
    const closesAt = this.end + (this.env.rule(state.metric)?.latenessMs ?? 0);
    if (state.status === "open" && state.awaiting) {
      // Due, and waiting for sub-actors' last shares or finer windows: final once the last is in.
      if (!this.waiting()) return this.finalize(ctx, watermark, true);
    } else if (state.status === "open" && !onTime && watermark >= closesAt) {
      // The whole window arrived after its time: it becomes final at once, all of it late.
      state.lateCount += partial.agg.count;
      if (!this.waiting()) return this.finalize(ctx, watermark, false);
      this.await(watermark, ctx);
    }
    if (delta) {
      // A correction goes out at once, one revision per late partial, so a replay after a crash
      // produces the same revisions with the same values.
      state.lateCount += partial.agg.count;
      state.status = "corrected";
      state.revision++;
      this.send();
      this.handUp(delta, watermark, false, ctx);
      return ctx.passivate();
    }
    this.changed = true;
    if (this.emitPending) return;
    const wait = this.lastEmitAt + this.env.emitIntervalMs - this.env.now();
    if (wait <= 0) return this.send();
    this.emitPending = true;
    ctx.setTimer("emit", wait, { type: "emit" });
  }

  private onFire(watermark: number, ctx: ActorContext<WindowMessage>) {
    if (!this.state || this.state.status !== "open") return;
    this.state.watermark = Math.max(this.state.watermark, watermark);
    if (this.waiting()) return this.await(watermark, ctx);
    this.finalize(ctx, watermark, true);
  }

  private finalize(ctx: ActorContext<WindowMessage>, watermark: number, onTime: boolean) {
    const state = this.state!;
    state.status = "final";
    state.revision = 1;
    this.emitPending = false;
    ctx.cancelTimer("emit");
    this.send();
    // `release`: if it held the window above, that one need not wait for it any more.
    this.handUp({ agg: { ...state.agg }, states: encodeStates(state.states ?? {}), release: state.awaiting ? this.key : undefined }, watermark, onTime, ctx);
    state.awaiting = undefined;
    ctx.passivate();
  }

  /** Hands a contribution up to the next coarser window of this series, if the rule rolls this window up. */
  private handUp(content: Pick<WindowPartial, "agg" | "states" | "hold" | "release">, watermark: number, onTime: boolean, ctx: ActorContext<WindowMessage>) {
    const state = this.state!;
    const rule = this.env.rule(state.metric);
    const up = rule && parentWindow(rule, state.window, this.start);
    if (!up) return;
    const key = actorKey(state.metric, up.window.id, up.start, parseActorKey(this.key).dimsId);
    const partial: WindowPartial = { key, metric: state.metric, window: up.window.id, start: up.start, end: up.start + up.window.sizeMs, dims: state.dims, ...content };
    ctx.send(key, { type: "partial", partial, watermark, onTime });
  }

  private send() {
    const state = this.state!;
    this.changed = false;
    // A hot series' window that so far only heard which sub-actors have its events has nothing to show.
    if (state.agg.count === 0 && state.status === "open") return;
    this.lastEmitAt = this.env.now();
    const rule = this.env.rule(state.metric);
    this.env.emit({
      key: this.key,
      metric: state.metric,
      window: state.window,
      start: this.start,
      end: this.end,
      dims: state.dims,
      status: state.status === "open" ? "provisional" : state.status,
      revision: state.revision,
      eventCount: state.agg.count,
      lateCount: state.lateCount,
      watermark: state.watermark,
      values: this.values(rule?.aggregates ?? ["count"]),
    });
  }

  private values(names: readonly string[]): Record<string, ResultValue> {
    const state = this.state!;
    return resultValues(state.agg, state.states, names, windowSizeMs(state.window));
  }
}

/** A window's `values`: the basic ones from `agg`, the others from their states (an initial one if none arrived yet). */
export function resultValues(agg: BasicAgg, states: Record<string, unknown> | undefined, names: readonly string[], sizeMs: number): Record<string, ResultValue> {
  const values: Record<string, ResultValue> = aggValues(agg, names, sizeMs);
  for (const name of names) {
    if (isBasicAggregate(name)) continue;
    const aggregation = resolveAggregation(name);
    const held = states?.[aggregation.stateKey] ?? aggregation.init();
    values[name] = aggregation.result(held, { sizeMs });
  }
  return values;
}

export function windowActorKind(env: WindowActorEnv): ActorKind<WindowMessage> {
  return {
    name: "window",
    create: (key, stored) => new WindowActor(key, stored ? decodeWindow(stored) : undefined, env),
  };
}

export { storedWindowTimes } from "./window-snapshot.js";

function decodeWindow(bytes: Uint8Array): WindowState {
  // Its start and end come from its key (`WindowActor.start`, `end`).
  const { start: _start, end: _end, states: encoded, ...s } = decodeWindowSnapshot(bytes);
  let states: Record<string, unknown> | undefined;
  for (const [stateKey, state] of Object.entries(encoded ?? {})) (states ??= {})[stateKey] = decodeState(resolveAggregation(stateKey), state);
  return { ...s, states } as WindowState;
}

/**
 * Aggregate states rest (and go to other actors) as base64 of their own binary encoding (one
 * already encoded stays as it is). A state handed to another actor is encoded, so the receiver
 * decodes its own copy: a live object may still change after.
 */
export function encodeStates(states: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [stateKey, state] of Object.entries(states)) {
    const bytes = typeof state === "string" ? undefined : state instanceof Uint8Array ? state : resolveAggregation(stateKey).encode(state);
    out[stateKey] = bytes ? Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64") : (state as string);
  }
  return out;
}

/**
 * A state as it arrives: its encoding (raw from the binary mailbox, base64 from a JSON one, a
 * snapshot or a hand-over), or a live object from an in-process router.
 */
function decodeState(aggregation: { decode(bytes: Uint8Array): unknown }, incoming: unknown): unknown {
  if (incoming instanceof Uint8Array) return aggregation.decode(incoming);
  return typeof incoming === "string" ? aggregation.decode(Buffer.from(incoming, "base64")) : incoming;
}

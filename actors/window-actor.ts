import type { Actor, ActorContext, ActorKind } from "../runtime/actor.js";
import { aggValues, emptyAgg, isBasicAggregate, mergeAgg, type BasicAgg } from "./aggregates.js";
import { resolveAggregation, type ResultValue } from "./aggregations/aggregation.js";
import { actorKey, parseActorKey } from "./actor-keys.js";
import { parentWindow } from "./rollups.js";
import type { WindowPartial } from "./router.js";
import type { MetricRule } from "./rules.js";
import type { ResultStatus, WindowIdentity, WindowResult } from "./window-result.js";

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
  | { type: "purge" };

export interface WindowActorEnv {
  rule(metric: string): MetricRule | undefined;
  emit(result: WindowResult): void;
  /** Minimum spacing of provisional results and of corrections. */
  emitIntervalMs: number;
  now(): number;
}

interface WindowState extends WindowIdentity {
  agg: BasicAgg;
  /** The other aggregates' states, by state key. */
  states: Record<string, unknown>;
  status: ResultStatus | "open";
  revision: number;
  lateCount: number;
  watermark: number;
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

  constructor(
    private readonly key: string,
    private state: WindowState | undefined,
    private readonly env: WindowActorEnv,
  ) {}

  receive(message: WindowMessage, ctx: ActorContext<WindowMessage>): void {
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
    }
  }

  snapshot(): Uint8Array | undefined {
    if (!this.state) return undefined;
    const { agg, states, ...rest } = this.state;
    const stored = { ...rest, agg: agg.count ? agg : { count: 0, sum: 0 }, states: encodeStates(states) };
    return Buffer.from(JSON.stringify(stored));
  }

  private onPartial(partial: WindowPartial, watermark: number, onTime: boolean, ctx: ActorContext<WindowMessage>) {
    const state = (this.state ??= {
      metric: partial.metric,
      window: partial.window,
      start: partial.start,
      end: partial.end,
      dims: partial.dims,
      agg: emptyAgg(),
      states: {},
      status: "open",
      revision: 0,
      lateCount: 0,
      watermark,
    });
    state.watermark = Math.max(state.watermark, watermark);
    // A late partial goes up as it came: copied before merging, which may keep the objects it is given.
    const delta = state.status !== "open" ? { agg: { ...partial.agg }, states: encodeStates(partial.states ?? {}) } : undefined;
    mergeAgg(state.agg, partial.agg);
    for (const [stateKey, incoming] of Object.entries(partial.states ?? {})) {
      const aggregation = resolveAggregation(stateKey);
      const from = decodeState(aggregation, incoming);
      state.states[stateKey] = stateKey in state.states ? aggregation.merge(state.states[stateKey], from) : from;
    }
    const closesAt = state.end + (this.env.rule(state.metric)?.latenessMs ?? 0);
    if (state.status === "open" && !onTime && watermark >= closesAt) {
      // The whole window arrived after its time: it becomes final at once, all of it late.
      state.lateCount += partial.agg.count;
      return this.finalize(ctx, watermark, false);
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
    this.finalize(ctx, watermark, true);
  }

  private finalize(ctx: ActorContext<WindowMessage>, watermark: number, onTime: boolean) {
    const state = this.state!;
    state.status = "final";
    state.revision = 1;
    this.emitPending = false;
    ctx.cancelTimer("emit");
    this.send();
    this.handUp({ agg: { ...state.agg }, states: encodeStates(state.states) }, watermark, onTime, ctx);
    ctx.passivate();
  }

  /** Hands a contribution up to the next coarser window of this series, if the rule rolls this window up. */
  private handUp(content: Pick<WindowPartial, "agg" | "states">, watermark: number, onTime: boolean, ctx: ActorContext<WindowMessage>) {
    const state = this.state!;
    const rule = this.env.rule(state.metric);
    const up = rule && parentWindow(rule, state.window, state.start);
    if (!up) return;
    const key = actorKey(state.metric, up.window.id, up.start, parseActorKey(this.key).dimsId);
    const partial: WindowPartial = { key, metric: state.metric, window: up.window.id, start: up.start, end: up.start + up.window.sizeMs, dims: state.dims, ...content };
    ctx.send(key, { type: "partial", partial, watermark, onTime });
  }

  private send() {
    const state = this.state!;
    this.changed = false;
    this.lastEmitAt = this.env.now();
    const rule = this.env.rule(state.metric);
    this.env.emit({
      key: this.key,
      metric: state.metric,
      window: state.window,
      start: state.start,
      end: state.end,
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
    const values: Record<string, ResultValue> = aggValues(state.agg, names, state.end - state.start);
    for (const name of names) {
      if (isBasicAggregate(name)) continue;
      const aggregation = resolveAggregation(name);
      const held = state.states[aggregation.stateKey] ?? aggregation.init();
      values[name] = aggregation.result(held, { sizeMs: state.end - state.start });
    }
    return values;
  }
}

export function windowActorKind(env: WindowActorEnv): ActorKind<WindowMessage> {
  return {
    name: "window",
    create: (key, stored) => new WindowActor(key, stored ? decodeWindow(stored) : undefined, env),
  };
}

/** What a restarted shard needs to know of a stored window to re-register its event-time timers. */
export function storedWindowTimes(bytes: Uint8Array): { end: number; open: boolean } {
  const state = JSON.parse(Buffer.from(bytes).toString()) as WindowState;
  return { end: state.end, open: state.status === "open" };
}

function decodeWindow(bytes: Uint8Array): WindowState {
  const s = JSON.parse(Buffer.from(bytes).toString()) as WindowState & { agg: Partial<BasicAgg>; states?: Record<string, string> };
  const agg = emptyAgg();
  agg.count = s.agg.count ?? 0;
  agg.sum = s.agg.sum ?? 0;
  if (typeof s.agg.min === "number") agg.min = s.agg.min;
  if (typeof s.agg.max === "number") agg.max = s.agg.max;
  const states: Record<string, unknown> = {};
  for (const [stateKey, encoded] of Object.entries(s.states ?? {})) states[stateKey] = decodeState(resolveAggregation(stateKey), encoded);
  return { ...s, agg, states };
}

/**
 * Aggregate states travel and rest as base64 of their own binary encoding (one already encoded
 * stays as it is). A state handed to another actor is encoded, so the receiver decodes its own
 * copy: a live object may still change after.
 */
export function encodeStates(states: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [stateKey, state] of Object.entries(states)) {
    out[stateKey] = typeof state === "string" ? state : Buffer.from(resolveAggregation(stateKey).encode(state)).toString("base64");
  }
  return out;
}

/** A state as it arrives: encoded (base64) from the mailbox, or a live object from an in-process router. */
function decodeState(aggregation: { decode(bytes: Uint8Array): unknown }, incoming: unknown): unknown {
  return typeof incoming === "string" ? aggregation.decode(Buffer.from(incoming, "base64")) : incoming;
}

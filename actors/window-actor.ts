import type { Actor, ActorContext, ActorKind } from "../runtime/actor.js";
import { aggValues, emptyAgg, isBasicAggregate, mergeAgg, type BasicAgg } from "./aggregates.js";
import { resolveAggregation, type ResultValue } from "./aggregations/aggregation.js";
import type { WindowPartial } from "./router.js";
import type { MetricRule } from "./rules.js";
import type { ResultStatus, WindowIdentity, WindowResult } from "./window-result.js";

export type WindowMessage =
  /** Events combined by a router; `watermark` is the shard's event-time watermark on arrival. */
  | { type: "partial"; partial: WindowPartial; watermark: number }
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
        return this.onPartial(message.partial, message.watermark, ctx);
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

  private onPartial(partial: WindowPartial, watermark: number, ctx: ActorContext<WindowMessage>) {
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
    mergeAgg(state.agg, partial.agg);
    for (const [stateKey, incoming] of Object.entries(partial.states ?? {})) {
      const aggregation = resolveAggregation(stateKey);
      const from = decodeState(aggregation, incoming);
      state.states[stateKey] = stateKey in state.states ? aggregation.merge(state.states[stateKey], from) : from;
    }
    const closesAt = state.end + (this.env.rule(state.metric)?.latenessMs ?? 0);
    if (state.status === "open" && state.watermark >= closesAt) {
      // The whole window arrived after its time: it becomes final at once, all of it late.
      state.lateCount += partial.agg.count;
      return this.finalize(ctx);
    }
    if (state.status !== "open") {
      // A correction goes out at once, one revision per late partial, so a replay after a crash
      // produces the same revisions with the same values.
      state.lateCount += partial.agg.count;
      state.status = "corrected";
      state.revision++;
      this.send();
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
    this.finalize(ctx);
  }

  private finalize(ctx: ActorContext<WindowMessage>) {
    this.state!.status = "final";
    this.state!.revision = 1;
    this.emitPending = false;
    ctx.cancelTimer("emit");
    this.send();
    ctx.passivate();
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
export function storedWindowTimes(bytes: Uint8Array): { metric: string; end: number; open: boolean } {
  const state = JSON.parse(Buffer.from(bytes).toString()) as WindowState;
  return { metric: state.metric, end: state.end, open: state.status === "open" };
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

/** Aggregate states travel and rest as base64 of their own binary encoding. */
export function encodeStates(states: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [stateKey, state] of Object.entries(states)) out[stateKey] = Buffer.from(resolveAggregation(stateKey).encode(state)).toString("base64");
  return out;
}

/** A state as it arrives: encoded (base64) from the mailbox, or a live object from an in-process router. */
function decodeState(aggregation: { decode(bytes: Uint8Array): unknown }, incoming: unknown): unknown {
  return typeof incoming === "string" ? aggregation.decode(Buffer.from(incoming, "base64")) : incoming;
}

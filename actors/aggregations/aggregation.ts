import type { TelemetryEvent } from "../event.js";

/** What an aggregate contributes to a result's `values`. */
export type ResultValue = number | null | { key: string; count: number }[] | Record<string, number>;

/**
 * A mergeable aggregation: a commutative monoid over events with a compact binary state.
 * Mergeability is what lets routers combine a batch, hot keys be split and merged, and windows
 * roll up. Write one as a small class and `registerAggregation` it (README, "Writing an
 * aggregation").
 */
export interface Aggregation<S = unknown> {
  /**
   * Aggregates that share one state name the same key (p50 and p99 share one sketch). It is also
   * how the state travels: `resolveAggregation(stateKey)` must find an aggregation that can
   * init/merge/encode/decode it.
   */
  readonly stateKey: string;
  /** Whether it reads the rule's `value` (events without the value then do not reach it). */
  readonly needsValue: boolean;
  init(): S;
  /** `value` is the rule's value of this event (undefined when the rule has none). */
  add(state: S, value: number | undefined, event: TelemetryEvent): void;
  /**
   * Optional, same as `add` for an aggregation that reads nothing of the event but the value:
   * routers then never build the event as an object (they hold batches in columns).
   */
  addValue?(state: S, value: number | undefined): void;
  /**
   * Optional, same as `add` for one that reads only `field` of the event: a tag, or `source`
   * when no tag of that name is set (undefined: neither).
   */
  readonly field?: string;
  addField?(state: S, fieldValue: string | undefined): void;
  /** Merge `from` into `into` and return the result (which may be `into` itself). Must be commutative and associative. */
  merge(into: S, from: S): S;
  result(state: S, window: { sizeMs: number }): ResultValue;
  encode(state: S): Uint8Array;
  decode(bytes: Uint8Array): S;
}

type Factory = (name: string, match: RegExpExecArray) => Aggregation;

const factories: { pattern: RegExp; factory: Factory }[] = [];
const resolved = new Map<string, Aggregation>();

/**
 * Makes aggregates whose name matches `pattern` available to rules. `factory` gets the name and
 * the match (e.g. `/^top(\d+):(.+)$/` gives K and the field). Later registrations win.
 */
export function registerAggregation(pattern: RegExp, factory: Factory): void {
  factories.unshift({ pattern, factory });
  resolved.clear();
}

/** The aggregation for an aggregate name, or an Error naming what is known. */
export function resolveAggregation(name: string): Aggregation {
  const known = resolved.get(name);
  if (known) return known;
  for (const { pattern, factory } of factories) {
    const match = pattern.exec(name);
    if (!match) continue;
    const aggregation = factory(name, match);
    resolved.set(name, aggregation);
    return aggregation;
  }
  throw new Error(`unknown aggregate ${JSON.stringify(name)} (known: ${factories.map((f) => f.pattern.source).join(", ")})`);
}

import { parse as parseYaml } from "yaml";
import { isBasicAggregate } from "./aggregates.js";
import { resolveAggregation, type Aggregation } from "./aggregations/aggregation.js";
import "./aggregations/builtin.js";
import { parseDuration } from "./durations.js";
import { parseRollups } from "./rollups.js";
import { parseWindow, type WindowSpec } from "./windows.js";

/** A metric definition: which events it takes, how it groups them, what it computes, over which windows. */
export interface MetricRule {
  readonly name: string;
  /** Events of this kind (the `<kind>` token of `telemetry.<source>.<kind>`); `*` takes all kinds. */
  readonly kind: string;
  /** The event value aggregated by sum/min/max/avg; events without it do not match. Not needed for count alone. */
  readonly value?: string;
  /** Tag names (or `source`) whose values make up the dimensions of a series. */
  readonly groupBy: readonly string[];
  /** Only events whose tags equal these values. */
  readonly where: Readonly<Record<string, string>>;
  /** Aggregate names as written: `count`, `avg`, `p99`, `distinct:source`, `top10:code`… */
  readonly aggregates: readonly string[];
  /** The mergeable states the non-basic aggregates need, one per state key. */
  readonly states: readonly Aggregation[];
  readonly windows: readonly WindowSpec[];
  /**
   * Coarser tumbling windows made by merging finalized windows upward instead of routing every
   * event into them again: the base window (the smallest tumbling one of `windows`, e.g. `1m`)
   * merges into the first rollup (`1h`), that into the next (`1d`). Each size is a multiple of
   * the one below. Empty: none. See `rollups.ts`.
   */
  readonly rollups: readonly WindowSpec[];
  /**
   * At most this many series (dimension combinations) per window; the partials of further ones
   * are folded into the `__other__` series (README, "Cardinality"). Undefined: unlimited.
   */
  readonly maxSeries?: number;
  /** How long after a window's end (in event time) it stays provisional before it is final. */
  readonly latenessMs: number;
  /** After the final result, late events still correct the window for this long (event time); later ones go to the DLQ as `too_late`. */
  readonly horizonMs: number;
  /**
   * Events count for this rule when they arrived (JetStream's stored time) at or after this
   * moment (ms); earlier ones only through a backfill. 0: from the start.
   */
  readonly activeFrom: number;
}

export const ruleDefaults = { window: "1m", lateness: "1m", horizon: "2h" } as const;

const metricName = /^[A-Za-z0-9_-]{1,64}$/;

/** Parses a rules file (YAML or JSON): `{"metrics": [ ... ]}`. Throws with the rule and field at fault. */
export function parseRules(text: string): MetricRule[] {
  return parseRuleDefinitions(text).map((m, i) => parseRule(m, i));
}

/** The rule definitions of a rules file as written (each validated), e.g. to store them. */
export function parseRuleDefinitions(text: string): Record<string, unknown>[] {
  const doc = parseYaml(text) as unknown;
  if (!doc || typeof doc !== "object" || !Array.isArray((doc as { metrics?: unknown }).metrics)) {
    throw new Error('rules: expected an object with a "metrics" array');
  }
  const definitions = (doc as { metrics: Record<string, unknown>[] }).metrics;
  const seen = new Set<string>();
  definitions.forEach((m, i) => {
    const rule = parseRule(m, i);
    if (seen.has(rule.name)) throw new Error(`rules: metric "${rule.name}" is defined twice`);
    if (rule.name.startsWith("_")) throw new Error(`rules: metric names starting with "_" are reserved ("${rule.name}")`);
    seen.add(rule.name);
  });
  return definitions;
}

export function parseRule(input: unknown, index = 0, activeFrom = 0): MetricRule {
  const where = `rules: metric #${index + 1}`;
  if (!input || typeof input !== "object") throw new Error(`${where}: expected an object`);
  const m = input as Record<string, unknown>;
  const name = m.name;
  if (typeof name !== "string" || !metricName.test(name)) {
    throw new Error(`${where}: "name" must be 1-64 letters, digits, _ or -`);
  }
  const at = `rules: metric "${name}"`;
  const kind = m.kind ?? "*";
  if (typeof kind !== "string" || kind.length === 0) throw new Error(`${at}: "kind" must be a string`);
  const value = m.value;
  if (value !== undefined && typeof value !== "string") throw new Error(`${at}: "value" must be a string`);
  const groupBy = m.groupBy ?? [];
  if (!Array.isArray(groupBy) || !groupBy.every((g) => typeof g === "string")) {
    throw new Error(`${at}: "groupBy" must be a list of tag names`);
  }
  const filter = m.where ?? {};
  if (typeof filter !== "object" || Array.isArray(filter) || !Object.values(filter).every((v) => typeof v === "string")) {
    throw new Error(`${at}: "where" must map tag names to values`);
  }
  const aggregates = m.aggregates ?? ["count"];
  if (!Array.isArray(aggregates) || aggregates.length === 0) throw new Error(`${at}: "aggregates" must be a non-empty list`);
  const states = new Map<string, Aggregation>();
  for (const a of aggregates) {
    if (typeof a !== "string") throw new Error(`${at}: aggregates are names, not ${JSON.stringify(a)}`);
    if (isBasicAggregate(a)) {
      if (a !== "count" && a !== "rate" && value === undefined) throw new Error(`${at}: aggregate "${a}" needs a "value"`);
      continue;
    }
    let aggregation: Aggregation;
    try {
      aggregation = resolveAggregation(a);
    } catch (e) {
      throw new Error(`${at}: ${(e as Error).message}`);
    }
    if (aggregation.needsValue && value === undefined) throw new Error(`${at}: aggregate "${a}" needs a "value"`);
    states.set(aggregation.stateKey, resolveAggregation(aggregation.stateKey));
  }
  const windowInput = m.windows ?? [m.window ?? ruleDefaults.window];
  if (!Array.isArray(windowInput) || windowInput.length === 0) throw new Error(`${at}: "windows" must be a non-empty list`);
  let windows: WindowSpec[];
  let rollups: WindowSpec[];
  let latenessMs: number;
  let horizonMs: number;
  try {
    windows = windowInput.map(parseWindow);
    rollups = parseRollups(m.rollups, windows);
    latenessMs = parseDuration((m.lateness as string | undefined) ?? ruleDefaults.lateness);
    horizonMs = parseDuration((m.horizon as string | undefined) ?? ruleDefaults.horizon);
  } catch (e) {
    throw new Error(`${at}: ${(e as Error).message}`);
  }
  const maxSeries = m.maxSeries;
  if (maxSeries !== undefined && !(Number.isSafeInteger(maxSeries) && (maxSeries as number) >= 1)) {
    throw new Error(`${at}: "maxSeries" must be a whole number of at least 1, not ${JSON.stringify(maxSeries)}`);
  }
  return {
    name,
    kind,
    value,
    groupBy: groupBy as string[],
    where: filter as Record<string, string>,
    aggregates: aggregates as string[],
    states: [...states.values()],
    windows,
    rollups,
    ...(maxSeries === undefined ? {} : { maxSeries: maxSeries as number }),
    latenessMs,
    horizonMs,
    activeFrom,
  };
}

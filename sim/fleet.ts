/**
 * Deterministic robot-fleet simulator (the model behind `tally simulate`).
 *
 * Every robot owns its own PRNG stream (derived from the fleet seed and its
 * index), so the events a robot emits depend only on the seed and the start
 * time, never on how often `eventsDue` is polled: calling it every 250 ms or
 * once per minute yields the same events (ordering aside).
 */
import type { TelemetryEvent } from "../actors/event.js";

/** Per-model characteristics. */
export interface ModelSpec {
  name: string;
  /** Mean cycle time in ms. */
  cycleMs: number;
  /** Relative error-proneness (fleet-wide mean is normalised to 1). */
  errorFactor: number;
  /** Equilibrium temperature offset in °C against the fleet baseline. */
  tempOffset: number;
  /** Emit a perf event every `perfEvery` status ticks (1 or 2). */
  perfEvery: number;
  /** Relative share of the fleet. */
  weight: number;
}

export const DEFAULT_SITES: readonly string[] = ["berlin", "austin", "osaka", "lyon"];
const EXTRA_SITES = ["sendai", "porto", "denver", "krakow", "pune", "leeds", "monterrey", "gdansk"];

export const DEFAULT_MODELS: readonly ModelSpec[] = [
  { name: "AX-100", cycleMs: 1400, errorFactor: 1.4, tempOffset: 3, perfEvery: 1, weight: 0.4 },
  { name: "AX-200", cycleMs: 1000, errorFactor: 0.6, tempOffset: -1, perfEvery: 1, weight: 0.35 },
  { name: "BX-7", cycleMs: 2600, errorFactor: 1.0, tempOffset: 6, perfEvery: 2, weight: 0.25 },
];

/** Error codes: `code` is the tag value, `name` is documentation only. */
export const ERROR_CODES: readonly { code: string; name: string; weight: number; severity: readonly number[] }[] = [
  { code: "E101", name: "overheat", weight: 0, severity: [2, 2, 3] }, // weight computed from temperature
  { code: "E204", name: "gripper jam", weight: 0.3, severity: [1, 1, 2] },
  { code: "E310", name: "path blocked", weight: 0.25, severity: [1, 1, 1, 2] },
  { code: "E412", name: "vision fault", weight: 0.15, severity: [1, 2, 2] },
  { code: "E503", name: "comm timeout", weight: 0.2, severity: [1, 1, 2] },
  { code: "E607", name: "motor overcurrent", weight: 0.1, severity: [2, 3, 3] },
];

export type RobotState = "working" | "idle" | "charging";

export interface FleetOptions {
  /** Number of robots (default 1000). */
  robots?: number;
  /** Seed for the PRNG (default 1). Strings are hashed. */
  seed?: number | string;
  /** Site count (names are generated) or explicit site names (default 4: berlin, austin, osaka, lyon). */
  sites?: number | readonly string[];
  /** Production lines per site (default 3); tag values `line-1` ... */
  linesPerSite?: number;
  /** Model names (known names get built-in specs) or full specs (default AX-100, AX-200, BX-7). */
  models?: readonly (string | ModelSpec)[];
  /** Mean status interval per robot in ms (default 3000). */
  intervalMs?: number;
  /** Relative interval jitter, uniform ±jitter (default 0.1). */
  jitter?: number;
  /** Fleet-wide mean probability that a status tick also emits an error (default 0.03). */
  errorRate?: number;
  /**
   * Start of simulated time. If omitted, the first `eventsDue` call anchors the
   * clock and returns no events.
   */
  startMs?: number;
  /**
   * If `nowMs` jumps further than this past the previous call, the skipped
   * time is dropped (robots resume at `nowMs - maxCatchUpMs`). Default: no limit.
   */
  maxCatchUpMs?: number;
}

/** Static description of one robot. */
export interface RobotInfo {
  id: string;
  site: string;
  line: string;
  model: string;
}

// ---------------------------------------------------------------- PRNG

/** mulberry32: tiny, fast, good-enough 32-bit PRNG returning floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** 32-bit integer mixer (murmur3 finaliser) to derive independent sub-seeds. */
function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

function seedToInt(seed: number | string): number {
  if (typeof seed === "number") {
    // Fold in high bits so large / fractional seeds still differ.
    const hi = Math.floor(seed / 4294967296);
    return mix32((seed >>> 0) ^ mix32(hi >>> 0));
  }
  let h = 2166136261;
  for (let i = 0; i < seed.length; i++) h = Math.imul(h ^ seed.charCodeAt(i), 16777619);
  return mix32(h >>> 0);
}

function gaussian(rng: () => number): number {
  // Box–Muller; 1 - u avoids log(0).
  const u = 1 - rng();
  const v = rng();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

const clamp = (x: number, lo: number, hi: number): number => (x < lo ? lo : x > hi ? hi : x);
const round1 = (x: number): number => Math.round(x * 10) / 10;

// ---------------------------------------------------------------- robots

const BASE_TEMP: Record<RobotState, number> = { working: 44, idle: 33, charging: 37 };
const TEMP_MIN = 15;
const TEMP_MAX = 95;

interface Robot {
  info: RobotInfo;
  spec: ModelSpec;
  rng: () => number;
  seq: number;
  /** Next status tick (ms, integer). */
  nextAt: number;
  /** Previous status tick (for elapsed-time based evolution). */
  lastAt: number;
  ticks: number;
  state: RobotState;
  battery: number;
  temperature: number;
  /** Per-robot multiplier on the fleet error rate (fleet mean 1). */
  errorFactor: number;
  /** Per-robot drain rate while working, %/s. */
  drainPerSec: number;
  /** Battery level at which the robot goes charging. */
  lowBattery: number;
  /** Per-robot cycle-time mean, ms. */
  cycleMs: number;
}

function modelSpecFor(m: string | ModelSpec, index: number): ModelSpec {
  if (typeof m !== "string") return m;
  const known = DEFAULT_MODELS.find((d) => d.name === m);
  if (known) return known;
  // Unknown name: derive stable but varied characteristics from the name.
  const r = mulberry32(seedToInt(m) ^ index);
  return {
    name: m,
    cycleMs: Math.round(800 + r() * 2200),
    errorFactor: 0.5 + r(),
    tempOffset: Math.round(-2 + r() * 8),
    perfEvery: r() < 0.5 ? 1 : 2,
    weight: 1,
  };
}

function siteNames(sites: number | readonly string[] | undefined): string[] {
  if (Array.isArray(sites)) {
    if (sites.length === 0) throw new Error("sites must not be empty");
    return [...sites];
  }
  const n = sites === undefined ? DEFAULT_SITES.length : (sites as number);
  if (!Number.isInteger(n) || n < 1) throw new Error(`sites must be a positive integer, got ${n}`);
  const pool = [...DEFAULT_SITES, ...EXTRA_SITES];
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(i < pool.length ? pool[i]! : `site-${i + 1}`);
  return out;
}

export class Fleet {
  readonly intervalMs: number;
  readonly errorRate: number;
  readonly jitter: number;
  private readonly robots: Robot[];
  private readonly maxCatchUpMs: number;
  private lastNow: number | undefined;

  constructor(opts: FleetOptions = {}) {
    const n = opts.robots ?? 1000;
    if (!Number.isInteger(n) || n < 0) throw new Error(`robots must be a non-negative integer, got ${n}`);
    this.intervalMs = opts.intervalMs ?? 3000;
    if (!(this.intervalMs > 0)) throw new Error(`intervalMs must be > 0, got ${this.intervalMs}`);
    this.jitter = clamp(opts.jitter ?? 0.1, 0, 0.9);
    this.errorRate = clamp(opts.errorRate ?? 0.03, 0, 1);
    this.maxCatchUpMs = opts.maxCatchUpMs ?? Infinity;

    const sites = siteNames(opts.sites);
    const lines = opts.linesPerSite ?? 3;
    if (!Number.isInteger(lines) || lines < 1) throw new Error(`linesPerSite must be a positive integer, got ${lines}`);
    const models = (opts.models ?? DEFAULT_MODELS).map(modelSpecFor);
    if (models.length === 0) throw new Error("models must not be empty");
    let weights = models.map((m) => (Number.isFinite(m.weight) && m.weight > 0 ? m.weight : 0));
    if (!weights.some((w) => w > 0)) weights = models.map(() => 1);
    const totalWeight = weights.reduce((a, b) => a + b, 0);

    const seed = seedToInt(opts.seed ?? 1);
    const fleetRng = mulberry32(seed);
    const pad = Math.max(4, String(n).length);

    this.robots = new Array(n);
    let factorSum = 0;
    for (let i = 0; i < n; i++) {
      // Assignment: sites round-robin (balanced), lines random, models weighted.
      const site = sites[i % sites.length]!;
      const line = `line-${1 + Math.floor(fleetRng() * lines)}`;
      let pick = fleetRng() * totalWeight;
      let mi = 0;
      while (mi < models.length - 1 && (pick -= weights[mi]!) >= 0) mi++;
      const spec = models[mi]!;
      const rng = mulberry32(mix32(seed ^ mix32(i + 0x9e3779b9)));
      // Individual error-proneness: log-normal spread, plus a few lemons.
      let errorFactor = spec.errorFactor * Math.exp(0.4 * gaussian(rng));
      if (rng() < 0.03) errorFactor *= 4;
      factorSum += errorFactor;

      const charging = rng() < 0.1;
      const state: RobotState = charging ? "charging" : rng() < 0.8 ? "working" : "idle";
      this.robots[i] = {
        info: { id: `robot-${String(i + 1).padStart(pad, "0")}`, site, line, model: spec.name },
        spec,
        rng,
        seq: 0,
        nextAt: 0,
        lastAt: 0,
        ticks: 0,
        state,
        battery: charging ? 10 + rng() * 40 : 25 + rng() * 75,
        temperature: BASE_TEMP[state] + spec.tempOffset + 3 * gaussian(rng),
        errorFactor,
        drainPerSec: 0.02 * (0.8 + 0.4 * rng()), // ≈ 80 min from full to empty while working
        lowBattery: 12 + rng() * 10,
        cycleMs: spec.cycleMs * (0.95 + 0.1 * rng()),
      };
    }
    // Normalise so that the fleet-wide mean error probability equals errorRate.
    if (n > 0 && factorSum > 0) {
      const k = n / factorSum;
      for (const r of this.robots) r.errorFactor *= k;
    }
    if (opts.startMs !== undefined) this.anchor(opts.startMs);
  }

  /** Number of robots. */
  get size(): number {
    return this.robots.length;
  }

  /** Static tags of every robot, in id order. */
  robotInfo(): RobotInfo[] {
    return this.robots.map((r) => ({ ...r.info }));
  }

  /** Time of the previous `eventsDue` call (or the start time), if anchored. */
  get lastMs(): number | undefined {
    return this.lastNow;
  }

  private anchor(startMs: number): void {
    this.lastNow = startMs;
    for (const r of this.robots) {
      // Spread first ticks uniformly over one interval so the fleet is not synchronised.
      r.nextAt = startMs + 1 + Math.floor(r.rng() * this.intervalMs);
      r.lastAt = r.nextAt - this.intervalMs;
    }
  }

  /**
   * Events emitted by all robots with `prev < ts <= nowMs`, where `prev` is the
   * previous call's `nowMs` (or `startMs`). Sorted by ts. The first call on a
   * fleet without `startMs` only anchors the clock and returns `[]`.
   */
  eventsDue(nowMs: number): TelemetryEvent[] {
    if (!Number.isFinite(nowMs)) throw new Error(`nowMs must be finite, got ${nowMs}`);
    nowMs = Math.floor(nowMs);
    if (this.lastNow === undefined) {
      this.anchor(nowMs);
      return [];
    }
    if (nowMs <= this.lastNow) return [];
    if (nowMs - this.lastNow > this.maxCatchUpMs) {
      const resume = nowMs - this.maxCatchUpMs;
      for (const r of this.robots) {
        if (r.nextAt <= resume) {
          const skip = Math.ceil((resume - r.nextAt + 1) / this.intervalMs);
          r.nextAt += skip * this.intervalMs;
          r.lastAt = r.nextAt - this.intervalMs;
        }
      }
    }
    this.lastNow = nowMs;

    const out: TelemetryEvent[] = [];
    const j = this.jitter;
    for (const r of this.robots) {
      while (r.nextAt <= nowMs) {
        const ts = r.nextAt;
        this.tick(r, ts, out);
        r.lastAt = ts;
        r.nextAt = ts + Math.max(1, Math.round(this.intervalMs * (1 + j * (2 * r.rng() - 1))));
      }
    }
    // Array.prototype.sort is stable, so ties keep robot order (deterministic).
    out.sort((a, b) => a.ts - b.ts);
    return out;
  }

  /** Advance one robot by one status tick at `ts`, pushing its events. */
  private tick(r: Robot, ts: number, out: TelemetryEvent[]): void {
    const rng = r.rng;
    const dtSec = Math.max(0, ts - r.lastAt) / 1000;
    r.ticks++;

    // --- state machine and battery
    switch (r.state) {
      case "working":
        r.battery -= r.drainPerSec * dtSec * (0.8 + 0.4 * rng());
        if (r.battery <= r.lowBattery) r.state = "charging";
        else if (rng() < 0.02) r.state = "idle";
        break;
      case "idle":
        r.battery -= 0.003 * dtSec;
        if (r.battery <= r.lowBattery) r.state = "charging";
        else if (rng() < 0.12) r.state = "working";
        break;
      case "charging":
        // Fast at first, tapering near full (CC/CV-like).
        r.battery += (r.battery < 80 ? 0.25 : 0.1) * dtSec * (0.9 + 0.2 * rng());
        if (r.battery >= 97 + rng() * 3) {
          r.battery = Math.min(r.battery, 100);
          r.state = rng() < 0.85 ? "working" : "idle";
        }
        break;
    }
    r.battery = clamp(r.battery, 0, 100);

    // --- temperature: mean-reverting random walk toward the state's equilibrium
    const target = BASE_TEMP[r.state] + r.spec.tempOffset;
    const pull = 1 - Math.exp(-dtSec / 60); // ~1 min time constant
    r.temperature += (target - r.temperature) * pull + 0.6 * Math.sqrt(Math.max(dtSec, 0.1) / 3) * gaussian(rng);
    r.temperature = clamp(r.temperature, TEMP_MIN, TEMP_MAX);

    const { id, site, line, model } = r.info;
    out.push({
      id: `${id}-${++r.seq}`,
      ts,
      source: id,
      kind: "status",
      tags: { site, line, model, state: r.state },
      values: { battery: round1(r.battery), temperature: round1(r.temperature) },
    });

    // --- errors: fleet rate × robot proneness × temperature excess
    const excess = r.temperature - target;
    // Symmetric around 1 so state-change transients (hotter or cooler than the new
    // equilibrium) cancel out and the fleet mean stays at errorRate.
    const tempFactor = clamp(1 + excess / 8, 0.25, 1.75);
    const p = clamp(this.errorRate * r.errorFactor * tempFactor, 0, 0.95);
    if (rng() < p) {
      // Hot robots mostly report overheat.
      const overheatW = clamp(0.04 + (excess - 1) / 15, 0.02, 0.6);
      let pick = rng();
      let err = ERROR_CODES[0]!;
      if (pick >= overheatW) {
        pick = (pick - overheatW) / (1 - overheatW);
        for (let i = 1; i < ERROR_CODES.length; i++) {
          pick -= ERROR_CODES[i]!.weight;
          err = ERROR_CODES[i]!;
          if (pick < 0) break;
        }
      }
      const severity = err.severity[Math.floor(rng() * err.severity.length)]!;
      out.push({
        id: `${id}-${++r.seq}`,
        ts,
        source: id,
        kind: "error",
        tags: { site, line, model, code: err.code },
        values: { severity },
      });
      if (err.code === "E607") r.temperature = Math.min(TEMP_MAX, r.temperature + 4);
      if (severity === 3 && r.state === "working") r.state = "idle";
    }

    // --- perf: while working, every tick or every other tick depending on the model
    if (r.state === "working" && r.ticks % r.spec.perfEvery === 0) {
      const heatSlowdown = r.temperature > 60 ? 1 + (r.temperature - 60) / 50 : 1;
      const cycle = Math.max(
        r.cycleMs * 0.3,
        r.cycleMs * heatSlowdown * (1 + 0.08 * gaussian(rng)),
      );
      const windowMs = dtSec * 1000 * r.spec.perfEvery;
      const items = Math.max(0, Math.floor(windowMs / cycle + rng()));
      out.push({
        id: `${id}-${++r.seq}`,
        ts,
        source: id,
        kind: "perf",
        tags: { site, line, model },
        values: { cycle_time: Math.round(cycle), items },
      });
    }
  }
}

import { isBasicAggregate, type BasicAgg } from "./aggregates.js";
import { actorKey, parseActorKey, saltOfKey } from "./actor-keys.js";
import { parentWindow, rollupLevel } from "./rollups.js";
import type { WindowPartial } from "./router.js";
import type { EncodedResult, WindowResult } from "./window-result.js";
import { resultValues, type WindowActorEnv, type WindowMessage } from "./window-actor.js";
import { decodeWindowSnapshot, encodeWindowSnapshot } from "./window-snapshot.js";
import { windowSizeMs } from "./windows.js";

/** What the table needs besides a window actor's environment: the actor system it hands windows to. */
export interface WindowTableEnv extends WindowActorEnv {
  /** A window leaves the table: its state (a window snapshot) goes to the actor system, to be checkpointed and to serve its actor. */
  handOff(key: string, state: Uint8Array, metric: string, end: number): void;
  /** A message for a window actor (a rollup window above a row). */
  send(key: string, message: WindowMessage): void;
}

interface Series {
  metric: string;
  window: string;
  /** Its dims' names, in order. */
  names: string[];
  sizeMs: number;
  /** `{"name":` of its one dimension (see `dimsJson`), and the name; undefined: its rows keep their dims. */
  dimsPrefix?: string;
  dimsName?: string;
  /** A snapshot's JSON tail up to its dims. */
  tailPrefix: string;
  /** A result's JSON from its metric to its start (`encoded`). */
  resultPrefix: string;
  /** The last start written (`encoded`), and its text: `start,"end":end`. */
  spanOf?: number;
  spanJson?: string;
}

/** Where an actor key's dims id starts (`["value",…]`: after its metric, window and start), without parsing the key. */
function dimsIdAt(key: string): number {
  return key.indexOf("\t", key.indexOf("\t", key.indexOf("\t") + 1) + 1) + 1;
}

/** A row's dims as JSON, from its key's dims id (`["value"]`) and its series' one dimension name. */
function dimsJson(series: Series, key: string): string {
  return `${series.dimsPrefix}${key.slice(dimsIdAt(key) + 1, -1)}}`;
}

/** Whether `dims` has exactly these names, in this order. */
function namesAre(dims: Record<string, string>, names: readonly string[]): boolean {
  let i = 0;
  for (const name in dims) if (names[i++] !== name) return false;
  return i === names.length;
}

/** Numbers per row, side by side in one Float64Array. */
const Col = { start: 0, count: 1, sum: 2, min: 3, max: 4, watermark: 5, lastEmitAt: 6 } as const;
const stride = 7;
/** Flags per row. */
const Changed = 1;
const EmitPending = 2;
const Dirty = 4;
const Live = 8;
/** Provisional emits due within the same few ms share one timer. */
const emitTickMs = 5;

/**
 * The open windows of plain rules, one row each in typed-array columns, where a window actor
 * would be three objects, a map entry, boxed numbers and a timer (README, "Memory"): at a million
 * open windows that was the node's largest cost, and it is most of what a high-cardinality rule
 * has. A row is a window actor in all but shape: it takes the same partials, emits the same
 * provisional and final results at the same moments, and rests as the same snapshot, so a
 * window moves to an actor (and back after a restart) without anyone noticing.
 *
 * Which windows: those of a rule with only basic aggregates (count, sum, min, max, avg, rate), at
 * its own window sizes (rollup windows wait for finer windows: actors), not salted, and while
 * open. A window leaves the table for an actor when it goes final (late partials are corrections,
 * which actors make), or when a partial arrives that a row cannot take: a hot series' markers,
 * aggregate states after a rule change. Its state is handed off then (`handOff`), and the actor
 * starts from it.
 */
export class WindowTable {
  private readonly rows = new Map<string, number>();
  private keys: (string | undefined)[] = [];
  /** Dims that do not follow from a row's key (`dimsJson`): a tag missing from its events, say. Rare. */
  private readonly oddDims = new Map<number, Record<string, string>>();
  /** Per row, its metric and window id: an index into `series` (a few per rule), not two references. */
  private seriesOf = new Uint32Array(0);
  private series: Series[] = [];
  private seriesIds = new Map<string, number>();
  private nums = new Float64Array(0);
  private flags = new Uint8Array(0);
  private readonly free: number[] = [];
  private readonly emits = new Map<number, { rows: number[]; timer: NodeJS.Timeout }>();
  /** The last watermark written in a result (`encoded`), and its text. */
  private watermarkOf = NaN;
  private watermarkJson = "null";

  constructor(private readonly env: WindowTableEnv) {}

  get size(): number {
    return this.rows.size;
  }

  has(key: string): boolean {
    return this.rows.has(key);
  }

  /** Whether a row can take `partial` (see the class comment). */
  takes(partial: WindowPartial): boolean {
    if (partial.salts || partial.fromSub || partial.hold || partial.release) return false;
    if (partial.states) for (const _ in partial.states) return false;
    return this.plain(partial.key, partial.metric, partial.window);
  }

  /** A window new to its shard (no state anywhere): a row from its first partial. */
  open(partial: WindowPartial, watermark: number): void {
    const row = this.add(partial.key, partial.metric, partial.window, partial.dims, partial.start);
    this.nums[row * stride + Col.watermark] = watermark;
    this.apply(partial, watermark);
  }

  /** A partial for a row (`has`, `takes`): as `WindowActor.onPartial` for an open window. */
  apply(partial: WindowPartial, watermark: number): void {
    const row = this.rows.get(partial.key)!;
    const n = this.nums;
    const at = row * stride;
    if (watermark > n[at + Col.watermark]!) n[at + Col.watermark] = watermark;
    const { agg } = partial;
    if (agg.count > 0) {
      n[at + Col.count] += agg.count;
      n[at + Col.sum] += agg.sum;
      if (agg.min < n[at + Col.min]!) n[at + Col.min] = agg.min;
      if (agg.max > n[at + Col.max]!) n[at + Col.max] = agg.max;
    }
    this.flags[row]! |= Dirty | Changed;
    const { metric, sizeMs } = this.series[this.seriesOf[row]!]!;
    const closesAt = n[at + Col.start]! + sizeMs + (this.env.rule(metric)?.latenessMs ?? 0);
    // The whole window arrived after its time: it becomes final at once, all of it late.
    if (watermark >= closesAt) return this.finalize(row, watermark, false, agg.count);
    if (this.flags[row]! & EmitPending) return;
    const due = n[at + Col.lastEmitAt]! + this.env.emitIntervalMs;
    if (due <= this.env.now()) return this.send(row);
    this.flags[row]! |= EmitPending;
    this.later(row, due);
  }

  /** The watermark passed the window's end + lateness; false if `key` is no row (one lookup: a close fires a million). */
  fire(key: string, watermark: number): boolean {
    const row = this.rows.get(key);
    if (row === undefined) return false;
    const at = row * stride + Col.watermark;
    if (watermark > this.nums[at]!) this.nums[at] = watermark;
    this.finalize(row, watermark, true);
    return true;
  }

  /** A partial the row cannot take is on its way: the window becomes an actor, starting from the row's state. */
  release(key: string): void {
    const row = this.rows.get(key)!;
    const { metric, sizeMs } = this.series[this.seriesOf[row]!]!;
    this.env.handOff(key, this.snapshot(row, "open", 0), metric, this.nums[row * stride + Col.start]! + sizeMs);
    this.remove(key, row);
  }

  /**
   * A window found in the stored state after a restart: a row if it is one a row can be (open,
   * plain, nothing but basic aggregates); false otherwise (it stays with the actors).
   */
  restore(key: string, stored: Uint8Array): boolean {
    const w = decodeWindowSnapshot(stored);
    // (An open window has no late events: those come after its final.)
    if (w.status !== "open" || w.lateCount !== 0 || w.states || w.subs || w.holds || w.awaiting || w.handed !== undefined || w.born !== undefined) return false;
    if (!this.plain(key, w.metric, w.window)) return false;
    const row = this.add(key, w.metric, w.window, w.dims, w.start);
    const at = row * stride;
    const n = this.nums;
    n[at + Col.count] = w.agg.count;
    n[at + Col.sum] = w.agg.sum;
    n[at + Col.min] = w.agg.min;
    n[at + Col.max] = w.agg.max;
    n[at + Col.watermark] = w.watermark;
    return true;
  }

  /**
   * The open windows of `metric`/`window` starting in [from, to) whose dimensions match `where`,
   * as provisional results of their current state: the shard answers queries for its rows itself,
   * so no copy of them is kept elsewhere (README, "Memory").
   */
  query(metric: string, window: string, from: number, to: number, where: Record<string, string>): WindowResult[] {
    const out: WindowResult[] = [];
    const wanted = this.series.map((s) => s.metric === metric && s.window === window);
    if (!wanted.includes(true)) return out;
    const n = this.nums;
    for (const row of this.rows.values()) {
      const start = n[row * stride + Col.start]!;
      if (start < from || start >= to || !wanted[this.seriesOf[row]!]) continue;
      let matches = true;
      if (Object.keys(where).length > 0) {
        const dims = this.dimsOf(row);
        for (const k in where) if (dims[k] !== where[k]) matches = false;
      }
      if (matches && n[row * stride + Col.count]! > 0) out.push(this.result(row, "provisional", 0));
    }
    return out;
  }

  /** The rows changed since the last call, as window snapshots (a checkpoint's cut takes them). */
  collect(put: (key: string, state: Uint8Array) => void): void {
    const flags = this.flags;
    for (let row = 0; row < flags.length; row++) {
      if ((flags[row]! & (Live | Dirty)) !== (Live | Dirty)) continue;
      flags[row]! &= ~Dirty;
      put(this.keys[row]!, this.snapshot(row, "open", 0));
    }
  }

  /** Forget every row and pending emit (the shard resets to its checkpoint, or stops). */
  reset(): void {
    for (const { timer } of this.emits.values()) clearTimeout(timer);
    this.emits.clear();
    this.rows.clear();
    this.keys = [];
    this.seriesOf = new Uint32Array(0);
    this.series = [];
    this.seriesIds.clear();
    this.oddDims.clear();
    this.nums = new Float64Array(0);
    this.flags = new Uint8Array(0);
    this.free.length = 0;
  }

  private plain(key: string, metric: string, window: string): boolean {
    const rule = this.env.rule(metric);
    if (!rule || !rule.aggregates.every(isBasicAggregate) || rollupLevel(rule, window) !== 0) return false;
    return saltOfKey(key) === undefined;
  }

  private add(key: string, metric: string, window: string, dims: Record<string, string>, start: number): number {
    let row = this.free.pop();
    if (row === undefined) {
      row = this.keys.length;
      if (row >= this.flags.length) this.grow();
    }
    this.rows.set(key, row);
    this.keys[row] = key;
    this.seriesOf[row] = this.seriesId(metric, window, dims);
    const series = this.series[this.seriesOf[row]!]!;
    // A row keeps no dims object (~80 bytes): they are in its key, as the JSON array of their values.
    if (series.dimsPrefix === undefined || dimsJson(series, key) !== JSON.stringify(dims)) this.oddDims.set(row, dims);
    const n = this.nums;
    const at = row * stride;
    n[at + Col.start] = start;
    n[at + Col.count] = 0;
    n[at + Col.sum] = 0;
    n[at + Col.min] = Infinity;
    n[at + Col.max] = -Infinity;
    n[at + Col.lastEmitAt] = -Infinity;
    this.flags[row] = Live;
    return row;
  }

  /** A row's metric, window and dims names (one rule's rows share one: few per shard). */
  private seriesId(metric: string, window: string, dims: Record<string, string>): number {
    // Rows opened one after another are mostly of one series: known without a string made.
    const last = this.series[this.lastSeries];
    if (last !== undefined && last.metric === metric && last.window === window && namesAre(dims, last.names)) return this.lastSeries;
    this.lastSeries = this.seriesIdOf(metric, window, dims);
    return this.lastSeries;
  }

  private lastSeries = -1;

  private seriesIdOf(metric: string, window: string, dims: Record<string, string>): number {
    const names = Object.keys(dims);
    const name = `${metric}\t${window}\t${JSON.stringify(names)}`;
    let id = this.seriesIds.get(name);
    if (id === undefined) {
      id = this.series.length;
      this.series.push({
        metric,
        window,
        names,
        sizeMs: windowSizeMs(window),
        // One dimension: its value's JSON is the key's dims id less its brackets. Otherwise the dims are kept per row.
        dimsPrefix: names.length === 1 ? `{${JSON.stringify(names[0])}:` : undefined,
        dimsName: names.length === 1 ? names[0] : undefined,
        tailPrefix: `{"metric":${JSON.stringify(metric)},"window":${JSON.stringify(window)},"dims":`,
        resultPrefix: `,"metric":${JSON.stringify(metric)},"window":${JSON.stringify(window)},"start":`,
      });
      this.seriesIds.set(name, id);
    }
    return id;
  }

  private dimsOf(row: number): Record<string, string> {
    const odd = this.oddDims.get(row);
    if (odd) return odd;
    const series = this.series[this.seriesOf[row]!]!;
    const key = this.keys[row]!;
    // One dimension whose value needs no unescaping (most): the key's `["value"]` less its brackets
    // and quotes; JSON.parse of it all cost 3% of a 1M-window run.
    const value = key.slice(dimsIdAt(key) + 2, -2);
    if (!value.includes("\\")) {
      const dims: Record<string, string> = {};
      dims[series.dimsName!] = value;
      return dims;
    }
    return JSON.parse(dimsJson(series, key)) as Record<string, string>;
  }

  private remove(key: string, row: number): void {
    this.rows.delete(key);
    this.keys[row] = undefined;
    this.oddDims.delete(row);
    this.flags[row] = 0;
    this.free.push(row);
  }

  private grow(): void {
    const capacity = Math.max(1024, this.flags.length * 2);
    const nums = new Float64Array(capacity * stride);
    nums.set(this.nums);
    const flags = new Uint8Array(capacity);
    flags.set(this.flags);
    const seriesOf = new Uint32Array(capacity);
    seriesOf.set(this.seriesOf);
    this.nums = nums;
    this.flags = flags;
    this.seriesOf = seriesOf;
  }

  /** `lateCount`: all of the window came after its time (its events are late ones). */
  private finalize(row: number, watermark: number, onTime: boolean, lateCount = 0): void {
    const key = this.keys[row]!;
    this.flags[row]! &= ~EmitPending;
    this.send(row, "final", 1, lateCount);
    const at = row * stride;
    const n = this.nums;
    const { metric, window } = this.series[this.seriesOf[row]!]!;
    const rule = this.env.rule(metric);
    const start = n[at + Col.start]!;
    const up = rule && parentWindow(rule, window, start);
    if (up) {
      // Its whole state goes up to the next coarser window of the series (WindowActor.handUp).
      const upKey = actorKey(metric, up.window.id, up.start, parseActorKey(key).dimsId);
      const partial: WindowPartial = {
        key: upKey,
        metric,
        window: up.window.id,
        start: up.start,
        end: up.start + up.window.sizeMs,
        dims: this.dimsOf(row),
        agg: this.aggOf(row),
        states: {},
        release: undefined,
      };
      this.env.send(upKey, { type: "partial", partial, watermark, onTime });
    }
    this.env.handOff(key, this.snapshot(row, "final", 1, lateCount), metric, start + this.series[this.seriesOf[row]!]!.sizeMs);
    this.remove(key, row);
  }

  private snapshot(row: number, status: "open" | "final", revision: number, lateCount = 0): Uint8Array {
    const n = this.nums;
    const at = row * stride;
    const agg = this.aggOf(row);
    const series = this.series[this.seriesOf[row]!]!;
    const { metric, window, sizeMs } = series;
    const start = n[at + Col.start]!;
    // Field by field: a spread here cost ~4 µs a row (window-snapshot.ts says why that matters).
    const odd = this.oddDims.get(row);
    const w = { metric, window, dims: odd ?? {}, agg, status, revision, lateCount, watermark: n[at + Col.watermark]! };
    if (odd) return encodeWindowSnapshot(w, start, start + sizeMs);
    // The snapshot's JSON tail, put together from strings the series and the key already hold.
    return encodeWindowSnapshot(w, start, start + sizeMs, undefined, `${series.tailPrefix}${dimsJson(series, this.keys[row]!)}}`);
  }

  /** A row's basic aggregates, as a window's state holds them. */
  private aggOf(row: number): BasicAgg {
    const n = this.nums;
    const at = row * stride;
    return { count: n[at + Col.count]!, sum: n[at + Col.sum]!, min: n[at + Col.min]!, max: n[at + Col.max]! };
  }

  /** As `WindowActor.send`. */
  private send(row: number, status: "provisional" | "final" = "provisional", revision = 0, lateCount = 0): void {
    this.flags[row]! &= ~Changed;
    const n = this.nums;
    const at = row * stride;
    const count = n[at + Col.count]!;
    if (count === 0 && status === "provisional") return;
    n[at + Col.lastEmitAt] = this.env.now();
    if (this.env.emitEncoded) return this.env.emitEncoded(this.encoded(row, status, revision, lateCount));
    this.env.emit(this.result(row, status, revision, lateCount));
  }

  /**
   * A row's result as the JSON `JSON.stringify` would give for `result(row, status, …)`, put
   * together from strings its series and key already hold, with no result, dims or values object
   * per window (as `snapshot` does for its tail). Same fields, same order; a number that is not
   * finite is `null`, as JSON.stringify writes it. `test/window-table.test.ts` checks the text
   * against the actors' results.
   */
  private encoded(row: number, status: "provisional" | "final", revision: number, lateCount: number): EncodedResult {
    const n = this.nums;
    const at = row * stride;
    const series = this.series[this.seriesOf[row]!]!;
    const { metric, window, sizeMs } = series;
    const key = this.keys[row]!;
    const start = n[at + Col.start]!;
    const count = n[at + Col.count]!;
    const odd = this.oddDims.get(row);
    const dims = odd ? JSON.stringify(odd) : dimsJson(series, key);
    const values = JSON.stringify(resultValues(this.aggOf(row), undefined, this.env.rule(metric)?.aggregates ?? ["count"], sizeMs));
    // A close fires its rows with one start and one watermark, and new windows mostly share them
    // too: their texts are made once (a millisecond time is a double, and writing one out cost as
    // much as the rest of the row).
    if (series.spanOf !== start) {
      series.spanOf = start;
      series.spanJson = `${jsonNumber(start)},"end":${jsonNumber(start + sizeMs)}`;
    }
    const watermark = n[at + Col.watermark]!;
    if (this.watermarkOf !== watermark) {
      this.watermarkOf = watermark;
      this.watermarkJson = jsonNumber(watermark);
    }
    const json =
      `{"key":${JSON.stringify(key)}${series.resultPrefix}${series.spanJson},"dims":${dims},"status":"${status}","revision":${revision}` +
      `,"eventCount":${jsonNumber(count)},"lateCount":${jsonNumber(lateCount)},"watermark":${this.watermarkJson},"values":${values}${this.env.encodedStamp ?? ""}}`;
    return { key, metric, window, status, revision, json };
  }

  private result(row: number, status: "provisional" | "final", revision: number, lateCount = 0): WindowResult {
    const n = this.nums;
    const at = row * stride;
    const { metric, window, sizeMs } = this.series[this.seriesOf[row]!]!;
    const start = n[at + Col.start]!;
    const agg = this.aggOf(row);
    const count = agg.count;
    return {
      key: this.keys[row]!,
      metric,
      window,
      start,
      end: start + sizeMs,
      dims: this.dimsOf(row),
      status,
      revision,
      eventCount: count,
      lateCount,
      watermark: n[at + Col.watermark]!,
      values: resultValues(agg, undefined, this.env.rule(metric)?.aggregates ?? ["count"], sizeMs),
      shard: undefined,
      epoch: undefined,
    };
  }

  /** A provisional emit for `row` at `due` (its throttle): rows due within one tick share a timer. */
  private later(row: number, due: number): void {
    const at = Math.ceil(due / emitTickMs) * emitTickMs;
    const pending = this.emits.get(at);
    if (pending) {
      pending.rows.push(row);
      return;
    }
    const timer = setTimeout(() => this.emitDue(at), Math.max(0, at - this.env.now()));
    this.emits.set(at, { rows: [row], timer });
  }

  private emitDue(at: number): void {
    const pending = this.emits.get(at);
    if (!pending) return;
    this.emits.delete(at);
    const now = this.env.now();
    for (const row of pending.rows) {
      // Gone final, or handed off, since (a row may be a new window's by now: it is pending only if its own).
      if (!(this.flags[row]! & EmitPending)) continue;
      const due = this.nums[row * stride + Col.lastEmitAt]! + this.env.emitIntervalMs;
      if (due > now) {
        this.later(row, due);
        continue;
      }
      this.flags[row]! &= ~EmitPending;
      if (this.flags[row]! & Changed) this.send(row);
    }
  }
}

/** A number as JSON.stringify writes it (`null` when not finite). */
function jsonNumber(x: number): string {
  return Number.isFinite(x) ? String(x) : "null";
}

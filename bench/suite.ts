/**
 * One run of the suite: how long each phase lasts (full or smoke), the Tally runs the scenarios
 * ask for, and the baselines they are compared with, all measured in this run.
 */
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { startLimit } from "./baselines/limit.js";
import { naiveUnavailable, startNaiveRedis } from "./baselines/naive-redis.js";
import { startStatsd, statsdUnavailable } from "./baselines/statsd.js";
import type { GeneratorSpec } from "./generator.js";
import { measureFreshness, peakRss, probeRule, rss, rssAnon, saturate, sleep, startTally, type Freshness, type LoadTiming, type TallyStack, type TallyStatus, type Throughput } from "./harness.js";
import { httpRequest } from "../test/processes.js";
import { summarizeProfile, type ProfileEntry } from "./profile.js";
import type { Workload } from "./workload.js";

export interface TallyCase {
  scenario: string;
  /** What varies within the scenario, e.g. "10k sources, count+avg". */
  variant: string;
  rules: object[];
  workload: Workload;
  /** The metric whose windows' final results are timed. */
  metric: string;
  latenessMs: number;
  /** Longer measurement than the suite's default (e.g. to fill many windows). */
  measureMs?: number;
  /** Start event time just after a minute boundary, so the load stays in one window per series. */
  oneWindow?: boolean;
}

export interface TallyRow {
  scenario: string;
  variant: string;
  mode: string;
  workload: Workload;
  rules: object[];
  throughput: Throughput;
  /** Whose CPU `throughput.cpuSecPerMillionByProcess` lists. */
  processes: string[];
  /** Input events that were neither duplicates nor rejected, per second. */
  aggregatedPerSec: number;
  peakRssBytes: number;
  natsPeakRssBytes: number;
  idleRssBytes: number;
  /** The idle node's memory split (high cardinality), read just before the load. */
  idle?: SettledMemory;
  peakActiveWindows: number;
  rssAtPeakWindows: number;
  /** Once the load stopped and the node drained it: active windows and the node's RSS then. */
  settled: SettledMemory;
  /** The same, once the node has been idle for `quietMs` more and then run a full GC (high cardinality only). */
  quiet?: SettledMemory & { quietMs: number };
  freshness: Freshness;
}

export interface BaselineRow {
  baseline: "limit" | "statsd" | "naive";
  mode: string;
  what: string;
  /** The Tally row it is compared with (limits: every row of the same message shape). */
  against?: { scenario: string; variant: string; mode: string };
  throughput: Throughput;
  /** Whose CPU `throughput.cpuSecPerMillionByProcess` lists. */
  processes: string[];
  peakRssBytes: number;
  note?: string;
}

export interface SuiteResult {
  startedAt: string;
  smoke: boolean;
  machine: { cpus: number; node: string };
  rows: TallyRow[];
  baselines: BaselineRow[];
  skipped: string[];
  profile?: { scenario: string; idlePercent: number; top: ProfileEntry[] };
}

/** A short name for a message shape: the limit baseline is measured once per shape. */
export function modeOf(w: Workload): string {
  if (w.encoding === "protobuf") return `protobuf ×${w.batch}`;
  return w.batch === 1 ? "JSON single" : `JSON ×${w.batch}`;
}

const caseKey = (c: TallyCase) => ({ scenario: c.scenario, variant: c.variant, mode: modeOf(c.workload) });

/** The canonical workload of a message shape, on which its limit is measured. */
function limitWorkload(w: Workload): Workload {
  return { sources: 10_000, encoding: w.encoding, batch: w.batch, grouping: w.grouping };
}

export class Suite {
  readonly timing: LoadTiming;
  readonly result: SuiteResult;
  private prefix = 0;

  constructor(readonly smoke: boolean) {
    this.timing = smoke ? { warmupMs: 1_000, measureMs: 2_000 } : { warmupMs: 3_000, measureMs: 15_000 };
    this.result = {
      startedAt: new Date().toISOString(),
      smoke,
      machine: { cpus: availableParallelism(), node: process.version },
      rows: [],
      baselines: [],
      skipped: [],
    };
  }

  /** Lateness of the scenarios' windows: short in smoke runs, so finals come within seconds. */
  get lateness(): { text: string; ms: number } {
    return this.smoke ? { text: "1s", ms: 1_000 } : { text: "5s", ms: 5_000 };
  }

  /** Sizes scale down for smoke runs. */
  size(full: number, smoke: number): number {
    return this.smoke ? smoke : full;
  }

  private idPrefix(): string {
    return String.fromCharCode(97 + (this.prefix++ % 26));
  }

  /** Starts nats-server and a node with the case's rules, saturates it, then times freshness at half that rate. */
  async tally(c: TallyCase): Promise<TallyRow> {
    const mode = modeOf(c.workload);
    this.log(`tally: ${c.scenario} / ${c.variant} / ${mode}`);
    await this.limit(c.workload);
    const stack = await startTally({ metrics: [...c.rules, probeRule(`${c.latenessMs}ms`)] });
    try {
      const now = Date.now();
      // One window: event time starts a second into a minute at least a minute ahead of the wall
      // clock, so the idle partitions' watermark (wall clock less the out-of-orderness) cannot close
      // it before the memory readings (a run started late in a minute had its windows close during them).
      // How the idle node's memory splits, to set the readings after the load against (no GC: as `idleRss`).
      const idle = c.oneWindow ? await settledMemory(stack) : undefined;
      const tsOffsetMs = c.oneWindow ? Math.ceil((now + 60_000) / 60_000) * 60_000 + 1_000 - now : 0;
      const spec: GeneratorSpec = { workload: c.workload, idPrefix: this.idPrefix(), target: { nats: stack.nats.url }, tsOffsetMs };
      const throughput = await saturate(stack, spec, { ...this.timing, measureMs: this.smoke ? this.timing.measureMs : (c.measureMs ?? this.timing.measureMs) });
      const counters = (await stack.status()).counters;
      await stack.drain(this.smoke ? 5_000 : 20_000); // start the freshness phase on an idle pipeline
      const settled = await settledMemory(stack);
      // A full GC at the start of the quiet period and another at its end: what the first frees, the
      // allocator has had the period to hand back to the OS (jemalloc, for one, waits ~10 s).
      const quiet = c.oneWindow && !this.smoke ? { ...(await settledMemory(stack, true).then(() => sleep(quietMs)).then(() => settledMemory(stack, true))), quietMs } : undefined;
      const freshness = await measureFreshness(
        stack,
        { ...spec, idPrefix: this.idPrefix(), rate: Math.max(1_000, throughput.eventsPerSec / 2) },
        { metric: c.metric, latenessMs: c.latenessMs, leadMs: this.smoke ? 500 : 2_000, graceMs: this.smoke ? 500 : 1_000, settleMs: this.smoke ? 3_000 : 10_000, minOffsetMs: tsOffsetMs },
      );
      const row: TallyRow = {
        scenario: c.scenario,
        variant: c.variant,
        mode,
        workload: c.workload,
        rules: c.rules,
        throughput,
        processes: ["tally node", "nats-server"],
        aggregatedPerSec: throughput.eventsPerSec * (1 - (counters.duplicates + counters.rejected) / Math.max(1, counters.events)),
        peakRssBytes: peakRss(stack.node.pid),
        natsPeakRssBytes: peakRss(stack.nats.pid),
        idleRssBytes: stack.idleRss,
        idle,
        peakActiveWindows: stack.peak.activeWindows,
        rssAtPeakWindows: stack.peak.rss,
        settled,
        quiet,
        freshness,
      };
      this.result.rows.push(row);
      this.log(`  ${Math.round(throughput.eventsPerSec)} events/s, provisional p99 ${freshness.provisional.p99} ms, final p99 ${freshness.final.p99} ms`);
      return row;
    } finally {
      await stack.stop();
    }
  }

  /** A separate saturated run of the case under `node --cpu-prof` (so profiling slows no measured row). */
  async profile(c: TallyCase): Promise<void> {
    const what = `${c.scenario} / ${c.variant} / ${modeOf(c.workload)}`;
    this.log(`profile: ${what}`);
    const dir = mkdtempSync(join(tmpdir(), "tally-bench-prof-"));
    const stack = await startTally({ metrics: c.rules }, { profileDir: dir });
    try {
      await saturate(stack, { workload: c.workload, idPrefix: this.idPrefix(), target: { nats: stack.nats.url }, tsOffsetMs: 0 }, this.timing);
    } finally {
      await stack.stop(); // the profile is written as the node exits
    }
    const file = readdirSync(dir).find((f) => f.endsWith(".cpuprofile"));
    if (file) this.result.profile = { scenario: what, ...summarizeProfile(join(dir, file), 10) };
    else this.result.skipped.push("profile: the node wrote no .cpuprofile");
    rmSync(dir, { recursive: true, force: true });
  }

  /** The transport's ceiling for this message shape (measured once per shape, on first use). */
  async limit(w: Workload): Promise<BaselineRow> {
    const mode = modeOf(w);
    const known = this.result.baselines.find((b) => b.baseline === "limit" && b.mode === mode);
    if (known) return known;
    this.log(`limit: ${mode}`);
    const workload = limitWorkload(w);
    const stack = await startLimit();
    try {
      const throughput = await saturate(stack, { workload, idPrefix: this.idPrefix(), target: { nats: stack.natsUrl }, tsOffsetMs: 0 }, this.timing);
      const row: BaselineRow = {
        baseline: "limit",
        mode,
        what: "JetStream consumer, decode + count",
        throughput,
        processes: ["consumer", "nats-server"],
        peakRssBytes: peakRss(stack.pids()[0]),
      };
      this.result.baselines.push(row);
      return row;
    } finally {
      await stack.stop();
    }
  }

  /** StatsD fed the same events as timers (and sets, counters for the rich rule set) over UDP. */
  async statsd(workload: Workload, rich: boolean, what: string, against: TallyCase): Promise<void> {
    const unavailable = statsdUnavailable();
    if (unavailable) return void this.result.skipped.push(`statsd: ${unavailable}`);
    this.log(`statsd: ${what}`);
    const stack = await startStatsd(workload, rich);
    try {
      const throughput = await saturate(stack, { workload, idPrefix: this.idPrefix(), target: { udpPort: stack.udpPort, rich }, tsOffsetMs: 0 }, this.timing);
      const dropped = stack.droppedEvents();
      this.result.baselines.push({
        baseline: "statsd",
        mode: "UDP lines",
        what,
        against: caseKey(against),
        throughput,
        processes: ["statsd"],
        peakRssBytes: peakRss(stack.pids()[0]),
        note: `${Math.round(dropped)} events in dropped datagrams`,
      });
    } finally {
      await stack.stop();
    }
  }

  /** A NATS consumer doing one Redis HINCRBY per event. */
  async naive(workload: Workload, what: string, against: TallyCase): Promise<void> {
    const unavailable = await naiveUnavailable();
    if (unavailable) return void this.result.skipped.push(`naive: ${unavailable}`);
    this.log(`naive: ${what}`);
    const stack = await startNaiveRedis();
    try {
      const throughput = await saturate(stack, { workload, idPrefix: this.idPrefix(), target: { nats: stack.natsUrl }, tsOffsetMs: 0 }, this.timing);
      const [consumer, , redis] = stack.pids();
      this.result.baselines.push({
        baseline: "naive",
        mode: modeOf(workload),
        what,
        against: caseKey(against),
        throughput,
        processes: ["consumer", "nats-server", "redis-server"],
        peakRssBytes: peakRss(consumer) + peakRss(redis),
      });
    } finally {
      await stack.stop();
    }
  }

  log(line: string): void {
    process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
  }
}

/** What the node holds: RSS, and how V8 and the buffers outside its heap split it (the node's `/v1/status`). */
export interface SettledMemory {
  activeWindows: number;
  rssBytes: number;
  heapUsedBytes: number;
  heapTotalBytes: number;
  externalBytes: number;
  /** The anonymous part of the RSS (not mapped files such as the node binary). */
  rssAnonBytes?: number;
  /** The routers' de-duplication tables (part of `externalBytes`). */
  dedupTablesBytes?: number;
  /** RocksDB's own accounting of its native memory. */
  rocksdb?: { memtables: number; blockCache: number; blockCachePinned: number; tableReaders: number };
  /** V8's heap spaces: resident and used bytes each (new, old, large objects…). */
  heapSpaces?: Record<string, { resident: number; used: number }>;
}

/** `collect`: after a full GC of the node (its garbage is not what its windows hold). */
async function settledMemory(stack: TallyStack, collect = false): Promise<SettledMemory> {
  const s = collect ? (JSON.parse((await httpRequest(`${stack.node.url}/v1/status?gc`, { timeoutMs: 60_000 })).body) as TallyStatus) : await stack.status();
  return {
    activeWindows: s.activeWindows,
    rssBytes: rss(stack.node.pid),
    rssAnonBytes: rssAnon(stack.node.pid),
    heapUsedBytes: s.memory.heapUsed,
    heapTotalBytes: s.memory.heapTotal,
    externalBytes: s.memory.external,
    dedupTablesBytes: s.memory.dedupTables,
    rocksdb: s.memory.rocksdb,
    heapSpaces: s.memory.heapSpaces,
  };
}

/** How long the high-cardinality case waits, windows still open, before its second memory reading. */
const quietMs = 12_000;

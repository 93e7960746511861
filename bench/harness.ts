/**
 * Shared bench machinery: the processes under test, the load generator, the closed-loop driver
 * that measures sustained throughput, CPU and memory from /proc, and freshness over the WebSocket.
 */
import { fork, spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { DeliverPolicy, jetstreamManager, type JetStreamManager, jetstream } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { WebSocket } from "ws";
import type { WindowResult } from "../actors/window-result.js";
import { resultsOf } from "../node/provisional-batcher.js";
import { streams } from "../node/streams.js";
import { nodeDefaults } from "../node/tally-node.js";
import { tempDir } from "../test/harness.js";
import { freePort, httpRequest, NatsProcess, NodeProcess } from "../test/processes.js";
import type { FromGenerator, GeneratorSpec, ToGenerator } from "./generator.js";

const here = dirname(fileURLToPath(import.meta.url));
/** The repository root (this file runs from dist/bench/). */
export const repoRoot = join(here, "..", "..");
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const outOfOrdernessMs = 2_000; // the node's default (README, "Operating")

// ---- child processes --------------------------------------------------------------------------

const children = new Set<ChildProcess>();
process.on("exit", () => children.forEach((c) => c.kill("SIGKILL")));

/** Kills `child` if the bench exits first (test/processes.ts does the same for nats-server and nodes). */
export function track<T extends ChildProcess>(child: T): T {
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

// ---- /proc ----------------------------------------------------------------------------------

const ticksPerSecond = 100; // `getconf CLK_TCK` on Linux

/** User + system CPU seconds a process has used so far (0 once it is gone). */
export function cpuSeconds(pid: number | undefined): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
  } catch {
    return 0;
  }
}

/** A size field (in kB) of `/proc/<pid>/status`, in bytes; 0 once the process is gone. */
function procStatusBytes(pid: number | undefined, field: string): number {
  try {
    const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Peak resident set size (VmHWM) in bytes. */
export function peakRss(pid: number | undefined): number {
  return procStatusBytes(pid, "VmHWM");
}

/** The anonymous part of a process's resident memory (its heap and allocators' memory, not mapped files). */
export function rssAnon(pid: number | undefined): number {
  return procStatusBytes(pid, "RssAnon");
}

/** Current resident set size (VmRSS) in bytes. */
export function rss(pid: number | undefined): number {
  return procStatusBytes(pid, "VmRSS");
}

// ---- statistics -----------------------------------------------------------------------------

export function percentile(values: number[], p: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

export interface Percentiles {
  p50: number | null;
  p99: number | null;
  n: number;
  /** Of `n`, how many never got an answer: they count with the time waited, so p50/p99 are then lower bounds. */
  censored: number;
}

export function percentiles(values: number[], censored: number[] = []): Percentiles {
  const all = [...values, ...censored];
  return { p50: percentile(all, 50), p99: percentile(all, 99), n: all.length, censored: censored.length };
}

// ---- the load generator ---------------------------------------------------------------------

export class Generator {
  published = 0;
  private readonly done: Promise<number>;

  private constructor(private readonly child: ChildProcess) {
    this.done = new Promise((resolve) => {
      child.on("message", (m: FromGenerator) => {
        if ("published" in m) this.published = m.published;
        if ("done" in m) resolve(m.done);
      });
      child.once("exit", () => resolve(this.published));
    });
  }

  static async start(spec: GeneratorSpec): Promise<Generator> {
    const child = track(fork(join(here, "generator.js"), [JSON.stringify(spec)], { stdio: ["ignore", "inherit", "inherit", "ipc"] }));
    await new Promise<void>((resolve, reject) => {
      child.once("message", () => resolve());
      child.once("exit", (code) => reject(new Error(`generator exited with ${code}`)));
    });
    return new Generator(child);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  allow(events: number): void {
    this.send({ allow: events });
  }

  async stop(): Promise<number> {
    this.send({ stop: true });
    return this.done;
  }

  private send(m: ToGenerator): void {
    if (this.child.connected) this.child.send(m);
  }
}

// ---- sustained throughput -------------------------------------------------------------------

/** A system under test, as the closed loop sees it. */
export interface System {
  /**
   * Events fully processed so far. `settled` (default `done`) also counts events that left the
   * queue otherwise (UDP datagrams the kernel dropped); `congested` holds the generator back.
   */
  progress(): Promise<{ done: number; settled?: number; congested?: boolean }>;
  /** Processes whose CPU and peak memory are the system's (the generator is not). */
  pids(): (number | undefined)[];
}

export interface Throughput {
  eventsPerSec: number;
  cpuSecPerMillion: number;
  /** The same, per process, in the order of `System.pids()`. */
  cpuSecPerMillionByProcess: number[];
  /** Share of the control loop's readings at which the system said it was congested. */
  congestedShare: number;
  /** Events processed in each whole second of the measured interval (the rate is not steady). */
  perSecond: number[];
  /** CPU the generator used per million events (not part of the figure above). */
  generatorCpuSecPerMillion: number;
  events: number;
  seconds: number;
}

export interface LoadTiming {
  warmupMs: number;
  measureMs: number;
}

/**
 * Closed loop: the generator may run at most `backlog` events ahead of what the system has
 * processed (about 0.3 s of work, and at least ~10 messages per partition), so it stays saturated
 * without an unbounded queue. The rate is processed events over the measured interval, after a
 * warm-up.
 */
export async function saturate(system: System, spec: GeneratorSpec, timing: LoadTiming): Promise<Throughput> {
  const generator = await Generator.start(spec);
  // At least ~10 messages per partition in flight, so no router waits for work between its batches.
  const minBacklog = Math.max(50_000, 240 * spec.workload.batch);
  let backlog = minBacklog;
  const sample = async () => ({ at: Date.now(), done: (await system.progress()).done, cpu: system.pids().map(cpuSeconds), gen: cpuSeconds(generator.pid) });
  const startedAt = Date.now();
  let first: Awaited<ReturnType<typeof sample>> | undefined;
  let previous = { at: startedAt, done: 0 };
  let readings = 0;
  let congestedReadings = 0;
  const perSecond: number[] = [];
  let second = { at: 0, done: 0 };
  try {
    generator.allow(backlog);
    for (;;) {
      await sleep(100);
      const { done, settled = done, congested } = await system.progress();
      const now = Date.now();
      // About 0.3 s of work in flight (more only grows the server's buffers), never less than the minimum.
      const rate = ((done - previous.done) * 1000) / Math.max(1, now - previous.at);
      backlog = Math.min(2_000_000, Math.max(backlog * 0.8, rate * 0.3, minBacklog));
      previous = { at: now, done };
      if (!congested) generator.allow(settled + backlog);
      if (first) (readings++, congested && congestedReadings++);
      if (first && now - second.at >= 1000) {
        perSecond.push(Math.round(((done - second.done) * 1000) / (now - second.at)));
        second = { at: now, done };
      }
      if (!first && now - startedAt >= timing.warmupMs) (first = await sample()), (second = { at: first.at, done: first.done });
      if (first && now - first.at >= timing.measureMs) break;
    }
    const last = await sample();
    const events = last.done - first!.done;
    const perMillion = (s: number) => (events > 0 ? (s * 1e6) / events : 0);
    const byProcess = last.cpu.map((cpu, i) => perMillion(cpu - first!.cpu[i]!));
    return {
      eventsPerSec: (events * 1000) / (last.at - first!.at),
      cpuSecPerMillion: byProcess.reduce((a, b) => a + b, 0),
      cpuSecPerMillionByProcess: byProcess,
      congestedShare: readings ? congestedReadings / readings : 0,
      perSecond,
      generatorCpuSecPerMillion: perMillion(last.gen - first!.gen),
      events,
      seconds: (last.at - first!.at) / 1000,
    };
  } finally {
    await generator.stop();
  }
}

// ---- Tally under test -------------------------------------------------------------------------

/** What the bench needs of a running `tally node`. */
export interface NodeUnderTest {
  readonly port: number;
  readonly url: string;
  readonly pid: number | undefined;
  stop(): Promise<void>;
}

/**
 * `node --cpu-prof bin/tally.js node …`: NODE_OPTIONS may not carry --cpu-prof, so this spawns it
 * directly. The profile is written into `profileDir` when the node exits (on SIGTERM it stops cleanly).
 * `TALLY_PROFILE=heap`: an allocation profile instead (`--heap-prof`, a `.heapprofile`).
 */
async function startProfiledNode(args: string[], profileDir: string): Promise<NodeUnderTest> {
  const port = await freePort();
  const child = track(
    spawn(process.execPath, [...(process.env.TALLY_PROFILE === "heap" ? ["--heap-prof", "--heap-prof-dir"] : ["--cpu-prof", "--cpu-prof-dir"]), profileDir, join(repoRoot, "bin", "tally.js"), "node", ...args, "--http", String(port)], {
      cwd: repoRoot,
      env: { ...process.env, ...nodeEnv },
      stdio: ["ignore", "ignore", "inherit"],
    }),
  );
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const url = `http://127.0.0.1:${port}`;
  for (const deadline = Date.now() + 20_000; ; await sleep(50)) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error("profiled tally node did not become healthy");
    if ((await httpRequest(`${url}/healthz`).catch(() => undefined))?.status === 200) break;
  }
  return {
    port,
    url,
    pid: child.pid,
    async stop() {
      child.kill("SIGTERM");
      // A stop that hangs (it did once: the placement round waited forever on kv.keys(), see
      // cluster/kv-list.ts) loses the profile, but the bench goes on.
      const kill = setTimeout(() => child.kill("SIGKILL"), 60_000);
      await exited;
      clearTimeout(kill);
    },
  };
}

export interface TallyStack extends System {
  nats: NatsProcess;
  node: NodeUnderTest;
  nc: NatsConnection;
  jsm: JetStreamManager;
  status(): Promise<TallyStatus>;
  /** The most active windows seen by `progress()`, and the node's RSS at that moment. */
  peak: { activeWindows: number; rss: number };
  /** The node's RSS once started, before any load. */
  idleRss: number;
  /** Waits (at most `timeoutMs`) until nothing is pending in the node's consumers: events, mailbox, results. */
  drain(timeoutMs: number): Promise<void>;
  stop(): Promise<void>;
}

export interface TallyStatus {
  node: string;
  watermark: number | null;
  activeWindows: number;
  memory: NodeJS.MemoryUsage & {
    dedupTables?: number;
    rocksdb?: { memtables: number; blockCache: number; blockCachePinned: number; tableReaders: number };
    heapSpaces?: Record<string, { resident: number; used: number }>;
  };
  shards: { shard: number }[];
  counters: { messages: number; events: number; duplicates: number; rejected: number; unmatched: number };
}

/**
 * nats-server and `tally node` as child processes on fresh data dirs; `rules` as in README "Rules".
 * With `nodes` > 1, a cluster of that many nodes (the first is the one `node` and `status` mean;
 * progress counts every node's events).
 */
/**
 * How the bench runs a node: as `make run` does, on jemalloc when Debian's libjemalloc2 is there,
 * with its background threads (README "Memory per active window"), and with a full GC on request before a memory reading
 * (`/v1/status?gc`).
 */
const jemalloc = ["x86_64", "aarch64"].map((arch) => `/usr/lib/${arch}-linux-gnu/libjemalloc.so.2`).find((path) => existsSync(path));
export const nodeEnv: Record<string, string> = {
  NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --expose-gc`.trim(),
  // An LD_PRELOAD of the caller's wins (`LD_PRELOAD= node dist/bench/run.js`: glibc's malloc).
  ...(jemalloc && process.env.LD_PRELOAD === undefined ? { LD_PRELOAD: jemalloc } : {}),
  // jemalloc's background threads, as `make run` (the caller's MALLOC_CONF wins).
  ...(process.env.MALLOC_CONF === undefined ? { MALLOC_CONF: "background_thread:true" } : {}),
};

export async function startTally(rules: { metrics: object[] }, opts: { profileDir?: string; nodes?: number } = {}): Promise<TallyStack> {
  const dir = tempDir("tally-bench-");
  const rulesFile = join(dir.path, "rules.json");
  writeFileSync(rulesFile, JSON.stringify(rules));
  const nats = await NatsProcess.start({ dir: join(dir.path, "nats") });
  const nodes: NodeUnderTest[] = [];
  for (let i = 0; i < (opts.nodes ?? 1); i++) {
    const dataDir = join(dir.path, `node${i}`);
    nodes.push(
      opts.profileDir && i === 0
        ? await startProfiledNode(["--nats", nats.url, "--data", dataDir, "--rules", rulesFile], opts.profileDir)
        : await NodeProcess.start({ natsUrl: nats.url, dataDir, rulesFile, env: nodeEnv }),
    );
  }
  const node = nodes[0]!;
  const nc = await connect({ servers: nats.url, name: "tally-bench" });
  const jsm = await jetstreamManager(nc);
  // A busy node may not answer for a while (its event loop blocked): that is a slow reading, not a failure.
  const statusOf = async (n: NodeUnderTest): Promise<TallyStatus> => {
    for (const giveUpAt = Date.now() + 120_000; ; ) {
      try {
        return JSON.parse((await httpRequest(`${n.url}/v1/status`, { timeoutMs: 10_000 })).body) as TallyStatus;
      } catch (e) {
        if (Date.now() > giveUpAt) throw e;
      }
    }
  };
  const status = () => statusOf(node);
  // Every shard and partition owned before the load starts (placement settles within a few rounds).
  for (const deadline = Date.now() + 30_000; Date.now() < deadline; await sleep(200)) {
    const all = await Promise.all(nodes.map(statusOf));
    if (all.reduce((n, s) => n + s.shards.length, 0) === nodeDefaults.shards && all.every((s) => s.shards.length > 0)) break;
  }
  const peak = { activeWindows: 0, rss: 0 };
  const results = `results-${(await status()).node}`;
  const pending = async (consumers: [stream: string, name: string][]) =>
    (await Promise.all(consumers.map(([stream, name]) => jsm.consumers.info(stream, name).catch(() => undefined)))).reduce((n, c) => n + (c?.num_pending ?? 0), 0);
  const unacked = async (consumers: [stream: string, name: string][]) =>
    (await Promise.all(consumers.map(([stream, name]) => jsm.consumers.info(stream, name).catch(() => undefined)))).reduce((n, c) => n + (c?.num_ack_pending ?? 0), 0);
  const routers: [string, string][] = Array.from({ length: nodeDefaults.partitions }, (_, p) => [streams.events, `router-${p}`]);
  const mailboxes: [string, string][] = Array.from({ length: nodeDefaults.shards }, (_, s) => [streams.mailbox, `shard-${s}`]);
  return {
    nats,
    node,
    nc,
    jsm,
    status,
    peak,
    idleRss: rss(node.pid),
    pids: () => [...nodes.map((n) => n.pid), nats.pid],
    async progress() {
      const [all, mailbox, stored] = await Promise.all([Promise.all(nodes.map(statusOf)), pending(mailboxes), pending([[streams.results, results]])]);
      const s = all[0]!;
      if (s.activeWindows > peak.activeWindows) Object.assign(peak, { activeWindows: s.activeWindows, rss: rss(node.pid) });
      // Routers count events as they route them: hold the load back while the window actors or the
      // results store lag, so the rate is one the whole pipeline keeps up with.
      return { done: all.reduce((n, x) => n + x.counters.events, 0), congested: mailbox > 2_000 || stored > 10_000 };
    },
    async drain(timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline && (await pending([...routers, ...mailboxes, [streams.results, results]])) > 0) await sleep(100);
      // Not pending is not applied: a shard's consumer hands the node up to 5,000 mailbox messages
      // at a time, acked only by the checkpoint after they were applied. A saturated node's shards
      // held seconds of work so (their watermark 4-10 s behind the routers' in the high-cardinality
      // row), which the freshness phase then measured as latency. Drained: at most a few
      // watermark messages per shard unacked (a checkpoint's worth: 5 a second, one cut a second).
      while (Date.now() < deadline && (await unacked(mailboxes)) > 16 * mailboxes.length) await sleep(100);
    },
    async stop() {
      await nc.close();
      for (const n of nodes) await n.stop();
      await nats.stop();
      dir.remove();
    },
  };
}

// ---- freshness --------------------------------------------------------------------------------

export interface Freshness {
  /** Probe event published → provisional result with it visible on the WebSocket. */
  provisional: Percentiles;
  /** The same probe events: published → delivered to a plain JetStream consumer (the transport's own latency). */
  transport: Percentiles;
  /** Final result published minus (window end + lateness), over every window of the metric ending at the phase's minute boundary. */
  final: Percentiles;
  /**
   * `final` less the out-of-orderness: how long after the watermark passed end + lateness (by its
   * definition, max event time − out-of-orderness, with events stamped as they are published) the
   * final result was out. The target's measure.
   */
  afterWatermark: Percentiles;
  /** Events/s offered during the phase. */
  rate: number;
  /** How long the phase and its wait for answers lasted. */
  seconds: number;
}

/** The freshness probe's metric: one event every 20 ms from source `probe`. */
export const probeRule = (lateness: string) => ({ name: "bench_probe", kind: "probe", aggregates: ["count"], window: "1m", lateness });

/**
 * Open loop at `spec.rate` events/s. Event time is shifted so that a minute boundary falls
 * `leadMs` into the phase: the windows ending there go final while we watch. A probe event every
 * 20 ms (source `probe`, its own rule) is timed from publish to the provisional result that counts
 * it on the WebSocket, and to a plain JetStream consumer. After the load, up to `settleMs` more for
 * late answers; a probe or window still without one counts with the time waited so far (and
 * `censored` says how many).
 */
export async function measureFreshness(
  stack: TallyStack,
  spec: GeneratorSpec,
  opts: { metric: string; latenessMs: number; leadMs: number; graceMs: number; settleMs: number; minOffsetMs?: number },
): Promise<Freshness> {
  const startedAt = Date.now();
  // Event time never goes back from an earlier phase's (`minOffsetMs` ahead of the wall clock).
  const boundary = Math.ceil((startedAt + (opts.minOffsetMs ?? 0) + opts.leadMs) / 60_000) * 60_000;
  const offset = boundary - opts.leadMs - startedAt; // event time = wall clock + offset
  const closesAt = boundary + opts.latenessMs; // event time at which the windows ending at `boundary` close
  const until = closesAt - offset + outOfOrdernessMs + opts.graceMs;

  const sentAt = new Map<string, number>();
  const probesByWindow = new Map<number, string[]>();
  const provisional = new Map<string, number>();
  const counted = new Map<number, number>();
  const ws = new WebSocket(`ws://127.0.0.1:${stack.node.port}/v1/subscribe?metric=bench_probe`);
  await new Promise((resolve, reject) => (ws.once("message", resolve), ws.once("error", reject)));
  ws.on("message", (data) => {
    const at = Date.now();
    const { point } = JSON.parse(String(data)) as { point?: WindowResult };
    if (!point) return;
    const ids = probesByWindow.get(point.start) ?? [];
    for (let i = counted.get(point.start) ?? 0; i < Math.min(point.eventCount, ids.length); i++) provisional.set(ids[i]!, at - sentAt.get(ids[i]!)!);
    counted.set(point.start, Math.max(counted.get(point.start) ?? 0, point.eventCount));
  });

  // The transport: the same probe messages through a plain ordered JetStream consumer.
  const transport = new Map<string, number>();
  const consumer = await jetstream(stack.nc).consumers.get(streams.events, { filter_subjects: "tally.events.*.probe.probe", deliver_policy: DeliverPolicy.New });
  const transportMessages = await consumer.consume({
    callback: (m) => {
      const id = (JSON.parse(m.string()) as { id: string }).id;
      const sent = sentAt.get(id);
      if (sent !== undefined) transport.set(id, Date.now() - sent);
    },
  });

  // Every window of the metric that ends at the boundary, and when its final result was published.
  const windows = new Set<string>();
  const finals = new Map<string, number>();
  const endsAtBoundary = `"end":${boundary},`;
  const sub = stack.nc.subscribe(`results.${opts.metric}.>`, {
    callback: (_e, m) => {
      const text = m.string();
      if (!text.includes(endsAtBoundary)) return;
      // One final or corrected result, or a batch of provisional ones (README, "Results").
      for (const r of resultsOf(text)) {
        if (r.end !== boundary) continue;
        windows.add(r.key);
        if (r.status !== "provisional" && !finals.has(r.key)) finals.set(r.key, Date.now());
      }
    },
  });

  const generator = await Generator.start({ ...spec, tsOffsetMs: offset });
  let n = 0;
  const probes = setInterval(() => {
    const id = `probe-${spec.idPrefix}-${n++}`;
    const ts = Date.now() + offset;
    const start = Math.floor(ts / 60_000) * 60_000;
    probesByWindow.set(start, [...(probesByWindow.get(start) ?? []), id]);
    sentAt.set(id, Date.now());
    stack.nc.publish("telemetry.probe.probe", JSON.stringify({ id, ts }));
  }, 20);
  while (Date.now() < until) await sleep(50);
  clearInterval(probes);
  const published = await generator.stop();
  const seconds = (Date.now() - startedAt) / 1000;
  const settled = () => provisional.size >= sentAt.size && transport.size >= sentAt.size && windows.size > 0 && finals.size >= windows.size;
  const settleBy = Date.now() + opts.settleMs;
  while (!settled() && Date.now() < settleBy) await sleep(50);
  ws.close();
  sub.unsubscribe();
  transportMessages.stop();

  const now = Date.now();
  const waited = (seen: Map<string, number>) => [...sentAt].filter(([id]) => !seen.has(id)).map(([, sent]) => now - sent);
  const lags = [...finals.values()].map((at) => at + offset - closesAt); // both in event time
  const unfinished = [...windows].filter((k) => !finals.has(k)).map(() => now + offset - closesAt);
  return {
    provisional: percentiles([...provisional.values()], waited(provisional)),
    transport: percentiles([...transport.values()], waited(transport)),
    final: percentiles(lags, unfinished),
    afterWatermark: percentiles(
      lags.map((lag) => lag - outOfOrdernessMs),
      unfinished.map((lag) => lag - outOfOrdernessMs),
    ),
    rate: published / seconds,
    seconds: (now - startedAt) / 1000,
  };
}

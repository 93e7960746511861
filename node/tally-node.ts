import { randomUUID } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { jetstream, type JetStreamClient, type JetStreamManager, type JsMsg } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { defaultLimits, type ValidationLimits } from "../actors/event.js";
import { Router } from "../actors/router.js";
import type { MetricRule } from "../actors/rules.js";
import type { EncodedResult, WindowResult } from "../actors/window-result.js";
import { PlacementController, type UnitHost } from "../cluster/controller.js";
import { Membership } from "../cluster/membership.js";
import { OwnershipTable } from "../cluster/ownership.js";
import { shardOf } from "../cluster/shards.js";
import { RocksStateStore } from "../runtime/state-store.js";
import { getHeapSpaceStatistics } from "node:v8";
import { auditRule } from "./audit.js";
import { HotKeyJudge } from "./hot-key-judge.js";
import { encodeMailbox } from "./mailbox-codec.js";
import type { IngestCounters } from "./partition-ingest.js";
import { PartitionHost } from "./partition-host.js";
import { ProvisionalBatcher } from "./provisional-batcher.js";
import { finalBatches, mayHoldFinals, resultTexts } from "./final-batches.js";
import { LiveResults, liveResultsDefaults } from "./live-results.js";
import { warmLiveResults, warmupSpanMs } from "./live-warmup.js";
import { dropResultsBefore, ResultsStore, type EpochSeen, type ResultQuery } from "./results-store.js";
import { defaultRetention, expiredRanges, type RetentionPolicy } from "./retention.js";
import { RouterLog } from "./router-log.js";
import { AckedPublisher, ackTimeoutMs } from "./acked-publisher.js";
import { RulesStore } from "./rules-store.js";
import { ShardHost } from "./shard-host.js";
import { ShardStateLog } from "./shard-state-log.js";
import { fileStrays } from "./stray-events.js";
import { ensureStreams, streams, subjects } from "./streams.js";
import { SupervisedConsumer } from "./supervised-consumer.js";
import { units, unitOf } from "./units.js";

export interface NodeOptions {
  /** One NATS URL, or several separated by commas (the servers of a NATS cluster). */
  natsUrl: string;
  dataDir: string;
  /** Rule definitions (as in a rules file) to seed the rules bucket with; stored rules win. */
  rules: Record<string, unknown>[];
  /** Event partitions: must match the server's subject mapping (`tally nats-config`). */
  partitions?: number;
  /** Actor shards: fixed for the life of a cluster. */
  shards?: number;
  outOfOrdernessMs?: number;
  idleTimeoutMs?: number;
  dedupHorizonMs?: number;
  /** How often partition watermarks are sent to the shards. */
  watermarkIntervalMs?: number;
  /** Minimum spacing of a window's provisional results. */
  emitIntervalMs?: number;
  /** Passivate window actors idle this long. */
  actorIdleMs?: number;
  /** How often window state and the mailbox position are checkpointed together. */
  checkpointIntervalMs?: number;
  maxBatch?: number;
  limits?: ValidationLimits;
  /** How long aggregates are kept, by window size (README, "Retention"). */
  retention?: RetentionPolicy;
  /** How long raw events stay in the events stream (backfills reach this far back). */
  eventRetentionMs?: number;
  /** Stream and KV replicas: 3 on a 3-server NATS cluster. */
  replicas?: number;
  /** How often a node compares what it owns with what placement says (README, "Operating a cluster"). */
  rebalanceIntervalMs?: number;
  /** At most this many shards or partitions handed to another node per rebalance round. */
  maxMovesPerRound?: number;
  /** A node whose heartbeat is this old is dead: its shards and partitions are taken over. */
  heartbeatTtlMs?: number;
  /** A shard's state log is compacted into a snapshot once its changes since the last reach this size. */
  compactAfterBytes?: number;
  /** Events per second into one series that make it hot: salted over `hotSalts` sub-actors (README, "Hot keys"). */
  hotThresholdPerSec?: number;
  hotSalts?: number;
  /** A hot series under a quarter of the threshold this long is unsalted again. */
  hotCoolAfterMs?: number;
}

export const nodeDefaults = {
  partitions: 24,
  shards: 32,
  outOfOrdernessMs: 2_000,
  idleTimeoutMs: 5_000,
  dedupHorizonMs: 10 * 60_000,
  watermarkIntervalMs: 200,
  emitIntervalMs: 250,
  actorIdleMs: 60_000,
  checkpointIntervalMs: 1_000,
  maxBatch: 1_000,
  retention: defaultRetention,
  eventRetentionMs: 7 * 86_400_000,
  retentionSweepMs: 10 * 60_000,
  replicas: 1,
  rebalanceIntervalMs: 1_000,
  maxMovesPerRound: 4,
  heartbeatTtlMs: 5_000,
  compactAfterBytes: 64 * 1024 * 1024,
  hotThresholdPerSec: 50_000,
  hotSalts: 4,
  hotCoolAfterMs: 60_000,
};

/** How long a provisional result waits for others to share its message (`ProvisionalBatcher`). */
export const provisionalFlushMs = 50;

/**
 * At most this many characters of JSON per batch of provisional results (~100 results). With
 * `resultsAckPending`, what the results consumer may have in flight: ≤ 64 MiB (a consumer pulls
 * whole messages; 1000 messages of 256 KiB made the server drop this node as a slow consumer).
 */
const provisionalBatchChars = 32 * 1024;
/** The same for a batch of final and corrected results (`publishFinals`). */
const finalBatchChars = 32 * 1024;
const resultsAckPending = 2_000;

/** Results stored (one read batch, one write batch) at a time by the results consumer. */
const storeSlice = 5_000;

type ResultListener = (result: WindowResult) => void;

/**
 * One Tally node: the routers of its event partitions, the window actors of its shards, the
 * results it publishes and the full results view it keeps for queries. Only this layer talks to
 * NATS; the actors see messages and an `emit` port.
 */
export class TallyNode {
  readonly id: string;
  readonly counters: IngestCounters = { messages: 0, events: 0, duplicates: 0, rejected: 0, unmatched: 0 };
  private readonly settings: Required<Omit<NodeOptions, "natsUrl" | "dataDir" | "rules" | "limits">> & {
    limits: ValidationLimits;
    retentionSweepMs: number;
  };
  /** The live rule set, as the rules bucket says now. */
  private rules: MetricRule[] = [];
  /** Every rule seen since start, removed ones included: windows in flight still need theirs. */
  private readonly known = new Map<string, MetricRule>([[auditRule.name, auditRule]]);
  private rulesStore!: RulesStore;
  private membership?: Membership;
  private controller?: PlacementController;
  private leaving = false;
  private jsm!: JetStreamManager;
  /** Where this node's HTTP API answers, for `tally status`. */
  private httpUrl?: string;
  private readonly startedAt = Date.now();
  private stopWatchingRules?: () => void;
  private nc!: NatsConnection;
  private js!: JetStreamClient;
  private publisher!: AckedPublisher;
  private store!: RocksStateStore;
  private shardHost!: ShardHost;
  private partitionHost!: PartitionHost;
  private results!: ResultsStore;
  /** Provisional results of open windows, in memory only (README, "Results"). */
  private live!: LiveResults;
  /** The connection the live view listens on: a slow reader there must not cost the node its main connection. */
  private liveNc?: NatsConnection;
  /** The results stream's last sequence when the live subscription began: earlier batches reach the view through the results consumer. */
  private liveFromSeq = 0;
  private sweepTimer?: NodeJS.Timeout;
  private provisional!: ProvisionalBatcher;
  private readonly tracked: SupervisedConsumer[] = [];
  private strays?: SupervisedConsumer;
  /** Result listeners, with the one metric each listens to (undefined: all). */
  private readonly listeners = new Map<ResultListener, string | undefined>();
  private watermarkTimer?: NodeJS.Timeout;
  private hotKeys?: HotKeyJudge;
  private retentionTimer?: NodeJS.Timeout;
  private ready = false;

  constructor(private readonly options: NodeOptions) {
    this.settings = { ...nodeDefaults, limits: defaultLimits, ...stripUndefined(options) } as TallyNode["settings"];
    mkdirSync(options.dataDir, { recursive: true });
    this.id = nodeIdIn(options.dataDir);
  }

  get isReady(): boolean {
    return this.ready;
  }

  /** The user's rules plus the built-in `_audit` metric. */
  get metricRules(): readonly MetricRule[] {
    return [...this.rules, auditRule];
  }

  async start(): Promise<void> {
    const s = this.settings;
    const log = (message: string) => console.error(`tally ${this.id}: ${message}`);
    // noAsyncTraces: nats.js otherwise builds two Error objects (for their stacks) per request and
    // JetStream publish, a tenth of the node's CPU under many small publishes (bench/README.md).
    this.nc = await connect({ servers: this.options.natsUrl.split(","), name: `tally-${this.id}`, maxReconnectAttempts: -1, noAsyncTraces: true });
    this.js = jetstream(this.nc, { timeout: ackTimeoutMs });
    this.publisher = new AckedPublisher(this.nc);
    const jsm = (this.jsm = await ensureStreams(this.nc, {
      eventRetentionMs: s.eventRetentionMs,
      dedupWindowMs: 2 * 60_000,
      dedupHorizonMs: s.dedupHorizonMs,
      replicas: s.replicas,
    }));
    await ShardStateLog.ensureStream(jsm, s.replicas);
    this.store = await RocksStateStore.open(join(this.options.dataDir, "rocksdb"));
    this.results = new ResultsStore(this.store);
    this.live = new LiveResults({
      ...liveResultsDefaults,
      closesAt: (result) => result.end + (this.known.get(result.metric)?.latenessMs ?? 0),
    });
    for (const [shard, epoch] of await this.results.storedEpochs()) this.live.noteEpoch(shard, epoch);
    this.provisional = new ProvisionalBatcher({
      flushMs: provisionalFlushMs,
      maxBytes: provisionalBatchChars,
      subjectOf: (result) => subjects.results(result.metric, result.window),
      // On the live connection, which does not hear its own messages: this node takes its own
      // provisional results straight into its view (`emitted`), without parsing them back.
      publish: (subject, body) => this.liveNc!.publish(subject, body),
    });
    const router = new Router([], s.shards);
    this.rulesStore = await RulesStore.open(this.nc, s.replicas);
    await this.rulesStore.seed(this.options.rules);
    this.stopWatchingRules = await this.rulesStore.watch(
      (rules) => {
        this.rules = rules;
        for (const rule of rules) this.known.set(rule.name, rule);
        router.setRules(rules);
      },
      (name, e) => log(`rule "${name}" in the rules bucket is invalid and ignored: ${e.message}`),
    );

    this.hotKeys = await HotKeyJudge.start(
      this.nc,
      {
        policy: { thresholdPerSec: s.hotThresholdPerSec, coolAfterMs: s.hotCoolAfterMs },
        salts: s.hotSalts,
        replicas: s.replicas,
        decidesHere: (metric, dimsId) => this.shardHost?.shards.has(shardOf(`${metric}\t${dimsId}`, s.shards)) ?? false,
        log,
      },
      (series) => router.setHotSeries(series),
    );

    // Results first, so nothing emitted below is missed by this node's view: other nodes'
    // provisional ones as they are published (core NATS, own connection; this node's own go into
    // its view directly), the rest through the results stream.
    this.liveNc = await connect({
      servers: this.options.natsUrl.split(","),
      name: `tally-${this.id}-live`,
      maxReconnectAttempts: -1,
      noAsyncTraces: true,
      noEcho: true,
    });
    this.liveNc.subscribe("results.>", { callback: (e, m) => void (e ?? this.takeLive(m.data)) });
    await this.liveNc.flush();
    this.liveFromSeq = (await jsm.streams.info(streams.results)).state.last_seq;
    const warmed = this.warmLive(log);
    this.sweepTimer = setInterval(() => this.live.sweep(), liveSweepMs);
    await this.startTracked(`results-${this.id}`, streams.results, "results.>", (batch) => this.storeResults(batch));

    this.shardHost = new ShardHost(
      {
        js: this.js,
        jsm,
        store: this.store,
        stateLog: new ShardStateLog(this.js, jsm),
        shardCount: s.shards,
        ruleOf: (metric) => this.known.get(metric),
        sink: { emitted: (result, held) => this.emitted(result, held), finals: (results) => this.publishFinals(results) },
        onFenced: (shard) => this.controller?.fenced(units.shard(shard)),
        observe: (key, events) => this.hotKeys?.observe(key, events),
        log,
      },
      s,
    );
    this.partitionHost = new PartitionHost(this.js, jsm, this.publisher, new RouterLog(this.publisher, this.js, jsm), router, s, this.counters, log);

    this.membership = await Membership.open(this.nc, s.heartbeatTtlMs, s.replicas);
    await this.membership.join(() => this.memberInfo(), 1_000, (e) => log(`heartbeat: ${e.message}`));
    const ownership = await OwnershipTable.open(this.nc, { replicas: s.replicas });
    this.controller = new PlacementController(
      this.id,
      units.all(s.shards, s.partitions),
      this.unitHost(),
      ownership,
      async () => (await this.membership!.members()).map((m) => ({ id: m.id, leaving: m.leaving })),
      { intervalMs: s.rebalanceIntervalMs, maxMovesPerRound: s.maxMovesPerRound, log },
    );
    await warmed; // before this node's shards take new epochs (see warmLiveResults)
    await this.controller.start();
    this.watermarkTimer = setInterval(() => void this.sendWatermarks(), s.watermarkIntervalMs);
    this.retentionTimer = setInterval(() => void this.enforceRetention(), s.retentionSweepMs);
    await this.enforceRetention();
    this.ready = true;
  }

  /**
   * Graceful: the node says it is leaving (placement stops giving it units), hands every shard
   * and partition over (checkpoint, release), leaves the membership, then the connection drains.
   */
  async stop(): Promise<void> {
    this.ready = false;
    clearInterval(this.watermarkTimer);
    clearInterval(this.retentionTimer);
    clearInterval(this.sweepTimer);
    this.stopWatchingRules?.();
    this.hotKeys?.stop();
    this.leaving = true;
    await this.membership?.beatNow().catch(() => undefined);
    await this.controller?.stop();
    await this.membership?.leave(this.id);
    // The last provisional results of the shards just handed over.
    this.provisional.flush();
    for (const consumer of this.tracked.reverse()) await consumer.stop();
    this.publisher.close();
    await this.liveNc?.flush().catch(() => undefined);
    await this.liveNc?.close();
    await this.nc.drain();
    await this.store.close();
  }

  /** The node's event-time watermark: the least of its shards'. */
  get watermark(): number {
    return this.shardHost?.watermark ?? -Infinity;
  }

  /** Tells the cluster where this node's HTTP API answers, at once (whoever serves it calls this). */
  async announceHttp(url: string): Promise<void> {
    this.httpUrl = url;
    await this.membership?.beatNow();
  }

  /** The rules bucket, for the admin API. */
  get ruleAdmin(): RulesStore {
    return this.rulesStore;
  }

  /** Stored finals and corrections, with the provisional results of open windows merged in. */
  async query(q: ResultQuery): Promise<WindowResult[]> {
    return this.live.merge(await this.results.query(q), q, this.shardHost?.openRows(q) ?? []);
  }

  /** What this node's RocksDB holds for `q`, without the in-memory provisional view (tests). */
  storedResults(q: ResultQuery): Promise<WindowResult[]> {
    return this.results.query(q);
  }

  /**
   * Every result this node stores or emits (of `metric` only, if given: a row's provisional
   * results then need no object made for others' metrics, see `emitted`).
   */
  onResult(listener: ResultListener, metric?: string): () => void {
    this.listeners.set(listener, metric);
    return () => this.listeners.delete(listener);
  }

  /** Publishes events as robots would, on `telemetry.<source>.<kind>` (the HTTP edge uses it). */
  async publishEvents(events: { source: string; kind: string; body: unknown }[]): Promise<void> {
    for (const e of events) this.nc.publish(subjects.telemetry(e.source, e.kind), JSON.stringify(e.body));
    await this.nc.flush();
  }

  /** Checkpoint every shard hosted here now (tests and benchmarks). */
  checkpoint(): Promise<void> {
    return this.shardHost.checkpointAll();
  }

  async status() {
    const now = Date.now();
    return {
      node: this.id,
      ready: this.ready,
      watermark: finiteOrNull(this.watermark),
      activeWindows: this.shardHost?.activeWindows ?? 0,
      // Bytes: where memory goes (V8's heap, buffers outside it, and of those the routers'
      // de-duplication tables; RocksDB's native memory), next to the windows that hold it.
      memory: {
        ...process.memoryUsage(),
        dedupTables: this.partitionHost?.dedupBytes ?? 0,
        rocksdb: this.store ? await this.store.memory() : undefined,
        // Resident bytes per V8 heap space (new, old, code, large objects…): which one holds what
        // the heap has committed beyond what it uses.
        heapSpaces: Object.fromEntries(getHeapSpaceStatistics().map((s) => [s.space_name, { resident: s.physical_space_size, used: s.space_used_size }])),
      },
      checkpoints: this.shardHost?.checkpoints ?? 0,
      moves: this.controller?.moves ?? 0,
      counters: this.counters,
      results: {
        provisionalWindows: this.live?.size ?? 0,
        finalsRemembered: this.live?.rememberedFinals ?? 0,
        provisionalTaken: this.live?.taken ?? 0,
        provisionalRefused: this.live?.refused ?? 0,
      },
      folded: this.shardHost?.folded() ?? {},
      hotKeys: this.hotKeys?.salted ?? [],
      partitions: (this.partitionHost?.marks(now) ?? []).map(([partition, mark]) => ({ partition, ...mark })),
      shards: [...(this.shardHost?.shards.values() ?? [])].map((s) => ({
        shard: s.id,
        epoch: s.epoch,
        watermark: finiteOrNull(s.watermark),
        pendingTimers: s.pendingTimers,
      })),
    };
  }

  /** Starts and stops the units placement gives this node. */
  private unitHost(): UnitHost {
    const on = (unit: string, shard: (id: number) => Promise<void>, partition: (id: number) => Promise<void>, strays: () => Promise<void>) => {
      const u = unitOf(unit);
      return u.kind === "shard" ? shard(u.id) : u.kind === "partition" ? partition(u.id) : strays();
    };
    return {
      start: (unit, epoch) =>
        on(
          unit,
          (id) => this.shardHost.start(id, epoch),
          (id) => this.partitionHost.start(id),
          () => this.startStrays(),
        ),
      stop: (unit) =>
        on(
          unit,
          (id) => this.shardHost.stop(id),
          (id) => this.partitionHost.stop(id),
          async () => this.strays?.stop(),
        ),
      abandon: (unit) =>
        on(
          unit,
          (id) => this.shardHost.abandon(id),
          (id) => this.partitionHost.stop(id),
          async () => this.strays?.stop(),
        ),
    };
  }

  /** This node's heartbeat: what it owns, its watermark, and how far behind its consumers are. */
  private async memberInfo() {
    const pending = async (stream: string, consumer: string) => (await this.jsm.consumers.info(stream, consumer).catch(() => undefined))?.num_pending ?? 0;
    const ownedPartitions = [...(this.partitionHost?.partitions.keys() ?? [])].sort((a, b) => a - b);
    const ownedShards = [...(this.shardHost?.shards.values() ?? [])].sort((a, b) => a.id - b.id);
    const [partitionLag, shardLag] = await Promise.all([
      Promise.all(ownedPartitions.map((p) => pending(streams.events, `router-${p}`))),
      Promise.all(ownedShards.map((s) => pending(streams.mailbox, s.consumerName))),
    ]);
    const partitions = Object.fromEntries(ownedPartitions.map((p, i) => [p, partitionLag[i]!]));
    const shards = Object.fromEntries(ownedShards.map((s, i) => [s.id, shardLag[i]!]));
    const mailbox = shardLag.reduce((a, b) => a + b, 0);
    return {
      id: this.id,
      http: this.httpUrl,
      leaving: this.leaving || undefined,
      startedAt: this.startedAt,
      heartbeatAt: Date.now(),
      partitions: ownedPartitions,
      shards: ownedShards.map((s) => s.id),
      watermark: finiteOrNull(this.watermark),
      lag: { partitions, shards, mailbox },
      folded: this.shardHost?.folded() ?? {},
    };
  }

  /**
   * Stray telemetry (subjects the partition mapping did not take) goes to the DLQ. One node files
   * it; the consumer's ack floor is where the next owner resumes (filing is idempotent).
   */
  private async startStrays(): Promise<void> {
    const name = "strays";
    this.strays = new SupervisedConsumer(this.js, this.jsm, {
      name,
      stream: streams.events,
      filter: subjects.strays,
      maxBatch: this.settings.maxBatch,
      maxAckPending: 20_000,
      recover: async () => ((await this.jsm.consumers.info(streams.events, name).catch(() => undefined))?.ack_floor.stream_seq ?? 0) + 1,
      handle: async (batch) => {
        this.counters.messages += batch.length;
        this.counters.rejected += await fileStrays(this.js, batch);
        batch[batch.length - 1]!.ack();
      },
      log: (message) => console.error(`tally ${this.id}: ${message}`),
    });
    await this.strays.start();
  }

  /** Deletes aggregates older than their window size's retention from this node's results store. */
  async enforceRetention(now = Date.now()): Promise<void> {
    for (const { metric, window, cutoff } of expiredRanges([...this.known.values()], this.settings.retention, now)) {
      this.live?.dropBefore(metric, window, cutoff);
      await dropResultsBefore(this.store, metric, window, cutoff).catch((e) => console.error(`retention ${metric}/${window}: ${(e as Error).message}`));
    }
  }

  /**
   * A consumer whose work is idempotent (the results view, DLQ filing) still must not skip a
   * message: it resumes from the last sequence it finished, kept in RocksDB, and recovers on a gap.
   */
  private async startTracked(name: string, stream: string, filter: string, handle: (batch: JsMsg[]) => Promise<void>) {
    const key = `position/${name}`;
    const consumer = new SupervisedConsumer(this.js, this.jsm, {
      name,
      stream,
      filter,
      maxBatch: this.settings.maxBatch,
      maxAckPending: resultsAckPending,
      recover: async () => Number(Buffer.from((await this.store.get(key)) ?? Buffer.from("0")).toString()) + 1,
      handle: async (batch) => {
        await handle(batch);
        const last = batch[batch.length - 1]!;
        await this.store.write([[key, Buffer.from(String(last.seq))]]);
        last.ack();
      },
      log: (message) => console.error(`tally ${this.id}: ${message}`),
    });
    this.tracked.push(consumer);
    await consumer.start();
  }

  /** Every shard hears where this node's partitions stand, wherever the shard is hosted. */
  private async sendWatermarks(): Promise<void> {
    void this.partitionHost.confirmQuiet();
    const marks = this.partitionHost.marks(Date.now());
    if (marks.length === 0) return;
    const body = encodeMailbox({ type: "marks", marks });
    try {
      await Promise.all(Array.from({ length: this.settings.shards }, (_, shard) => this.js.publish(subjects.mailbox(shard), body)));
    } catch (e) {
      if (this.ready) console.error("watermarks:", (e as Error).message);
    }
  }

  /**
   * A result as a shard's window emits it. Provisional results are batched (`ProvisionalBatcher`:
   * one message per results subject every `provisionalFlushMs`, a JSON array) and published
   * without waiting for JetStream's ack: the stream still stores them, but each is superseded by
   * the next anyway, and one message (and one ack) per changed window every emit interval was
   * what a node with many active windows spent its time on. A final or corrected result drops its
   * window's provisional result still waiting, and goes out with its shard's next `publishFinals`.
   */
  private emitted(result: WindowResult | EncodedResult, held = false): void {
    if (result.status !== "provisional") return this.provisional.supersede(result);
    // A row's, as its JSON (held: a row of a shard's table answers queries itself, the view keeps
    // no copy, README "Memory"): parsed only for a listener of its metric.
    if ("json" in result) {
      if (this.heard(result.metric)) this.notify(JSON.parse(result.json) as WindowResult);
    } else if (held || this.live.offer(result)) this.notify(result);
    this.provisional.add(result);
  }

  /**
   * Final and corrected results are JetStream publishes, acked before the shard's checkpoint
   * (exactly once): batched too (`finalBatches`, one message per results subject of up to
   * `finalBatchChars`), through the acked publisher. When a minute closes, every window of it goes
   * final at once (200k for 200k series); one publish, message id, ack and promise per result
   * made that burst seconds long, and so did storing and delivering 200k messages.
   */
  private publishFinals(results: (WindowResult | EncodedResult)[]): Promise<unknown> {
    const sent: Promise<unknown>[] = [];
    for (const batch of finalBatches(results, (r) => subjects.results(r.metric, r.window), finalBatchChars)) {
      sent.push(this.publisher.publish(batch.subject, batch.body, { msgID: batch.id }));
    }
    return Promise.all(sent);
  }

  /**
   * The provisional results of windows still open, from the results stream's recent past (README,
   * "Where a node keeps results"). A failure only costs those windows until their next result.
   */
  private async warmLive(log: (message: string) => void): Promise<void> {
    try {
      const r = await warmLiveResults(this.js, this.jsm, this.live, {
        sinceMs: Date.now() - warmupSpanMs(this.known.values()),
        untilSeq: this.liveFromSeq,
        maxBytes: warmupMaxBytes,
        timeoutMs: warmupTimeoutMs,
      });
      if (r.messages > 0) log(`live view warmed: ${r.taken} open windows from ${r.results} provisional results, ${r.messages} messages (${(r.bytes / 2 ** 20).toFixed(1)} MiB) in ${r.ms} ms${r.truncated ? ", cut short" : ""}`);
    } catch (e) {
      log(`live view warm-up failed: ${(e as Error).message}`);
    }
  }

  /**
   * A message on a results subject, as published (the live subscription): a batch of provisional
   * results goes into the in-memory view and to subscribers at once, before and without any
   * RocksDB work. Finals and corrections (single objects) are left to the results consumer.
   */
  private takeLive(data: Uint8Array): void {
    if (data[0] !== 0x5b) return; // "[": a batch of results
    const text = textDecoder.decode(data);
    // A batch of finals (the results consumer's): not parsed here too.
    if (!text.includes('"status":"provisional"')) return;
    let results: WindowResult[];
    try {
      results = JSON.parse(text) as WindowResult[];
    } catch {
      return; // not ours to judge: the results consumer sees the same message
    }
    for (const result of results) if (this.live.offer(result)) this.notify(result);
  }

  private notify(result: WindowResult): void {
    for (const [listener, metric] of this.listeners) if (metric === undefined || metric === result.metric) listener(result);
  }

  /** Whether a listener wants results of `metric`. */
  private heard(metric: string): boolean {
    for (const wanted of this.listeners.values()) if (wanted === undefined || wanted === metric) return true;
    return false;
  }

  /**
   * The results consumer: final and corrected results into RocksDB, in stream order, then to
   * subscribers (a batch of them, or one alone, as an older version published them). A batch of
   * provisional results is not stored: only its shard epochs are taken (they fence older epochs'
   * finals, as before), found without parsing it; the live subscription handles its results, and
   * `warmLive` those published before it began.
   */
  private async storeResults(batch: JsMsg[]): Promise<void> {
    // Parsed as stored, a slice at a time: a delivery of 1,000 batches of finals is ~130k results,
    // and parsing them all first kept them all alive across the store's awaits (old-generation
    // garbage, GC work long after a minute closed).
    let items: (WindowResult | EpochSeen)[] = [];
    // Each result's JSON as it came, where the message gives it (`resultTexts`): stored as is.
    let texts: (Uint8Array | undefined)[] = [];
    for (const m of batch) {
      const text = m.string();
      if (m.data[0] === 0x5b && !mayHoldFinals(text)) {
        for (const seen of epochsIn(text)) {
          items.push(seen);
          texts.push(undefined);
        }
      } else {
        const parsed = resultTexts(m.data, text);
        parsed.results.forEach((result, i) => {
          if (result.status === "provisional") {
            // A provisional result alone (a node of an older version publishes them so): the view's too.
            if (m.data[0] !== 0x5b && this.live.offer(result) && m.seq > this.liveFromSeq) this.notify(result);
            if (result.shard !== undefined && result.epoch !== undefined) {
              items.push({ seen: "epoch", shard: result.shard, epoch: result.epoch });
              texts.push(undefined);
            }
            return;
          }
          items.push(result);
          texts.push(parsed.texts?.[i]);
        });
      }
      if (items.length >= storeSlice) {
        await this.storeItems(items, texts);
        items = [];
        texts = [];
      }
    }
    if (items.length > 0) await this.storeItems(items, texts);
  }

  /** Results in stream order into the results store, then to the live view and subscribers. */
  private async storeItems(items: (WindowResult | EpochSeen)[], texts: (Uint8Array | undefined)[]): Promise<void> {
    const outcomes = await this.results.putAllDetailed(items, texts);
    const now = Date.now();
    items.forEach((item, i) => {
      if ("seen" in item || outcomes[i] === "stale") return;
      this.live.settle(item, now);
      if (outcomes[i] === "stored") this.notify(item);
    });
  }
}

const textDecoder = new TextDecoder();

/** How often the live view drops windows long closed without a final (`LiveResults.sweep`). */
const liveSweepMs = 5_000;

/**
 * The most of the results stream a start reads back into the live view (the newest part of the
 * span): read and parsed at ~70 MiB/s here (`bench/live-warmup.ts`), so ≤ ~4 s before the node's
 * shards start (README, "Where a node keeps results").
 */
const warmupMaxBytes = 256 * 2 ** 20;
const warmupTimeoutMs = 30_000;

/**
 * The shard epochs in a batch of provisional results, without parsing it: every result ends
 * with `"shard":N,"epoch":M}` (hosted-shard.ts adds both last; a tag or aggregate value cannot
 * hold that unescaped), the highest epoch per shard.
 */
export function epochsIn(text: string): EpochSeen[] {
  const newest = new Map<number, number>();
  for (const m of text.matchAll(/"shard":(\d+),"epoch":(\d+)\}/g)) {
    const shard = Number(m[1]);
    const epoch = Number(m[2]);
    if (epoch > (newest.get(shard) ?? -1)) newest.set(shard, epoch);
  }
  return [...newest].map(([shard, epoch]) => ({ seen: "epoch", shard, epoch }));
}

function nodeIdIn(dataDir: string): string {
  const file = join(dataDir, "node-id");
  if (existsSync(file)) return readFileSync(file, "utf8").trim();
  const id = randomUUID().slice(0, 8);
  writeFileSync(file, id);
  return id;
}

function finiteOrNull(n: number): number | null {
  return Number.isFinite(n) ? n : null;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

import { createHash, randomUUID } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { jetstream, type JetStreamClient, type JetStreamManager, type JsMsg } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { defaultLimits, type ValidationLimits } from "../actors/event.js";
import { Router } from "../actors/router.js";
import type { MetricRule } from "../actors/rules.js";
import type { WindowResult } from "../actors/window-result.js";
import { RocksStateStore } from "../runtime/state-store.js";
import { auditRule } from "./audit.js";
import { encodeMailbox } from "./mailbox-codec.js";
import { PartitionIngest, type IngestCounters } from "./partition-ingest.js";
import { dropResultsBefore, ResultsStore, type ResultQuery } from "./results-store.js";
import { defaultRetention, expiredRanges, type RetentionPolicy } from "./retention.js";
import { RouterLog } from "./router-log.js";
import { Membership } from "../cluster/membership.js";
import { RulesStore } from "./rules-store.js";
import { ShardHost } from "./shard-host.js";
import { fileStrays } from "./stray-events.js";
import { ensureStreams, streams, subjects } from "./streams.js";
import { SupervisedConsumer } from "./supervised-consumer.js";

export interface NodeOptions {
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
};

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
  private jsm!: Awaited<ReturnType<typeof ensureStreams>>;
  /** Where this node's HTTP API answers, for `tally status`. */
  private httpUrl?: string;
  private readonly startedAt = Date.now();
  private stopWatchingRules?: () => void;
  private nc!: NatsConnection;
  private js!: JetStreamClient;
  private store!: RocksStateStore;
  private host!: ShardHost;
  private results!: ResultsStore;
  private readonly ingests: PartitionIngest[] = [];
  private readonly routers: SupervisedConsumer[] = [];
  private shardConsumer?: SupervisedConsumer;
  private readonly tracked: SupervisedConsumer[] = [];
  private readonly listeners = new Set<ResultListener>();
  private watermarkTimer?: NodeJS.Timeout;
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
    this.nc = await connect({ servers: this.options.natsUrl, name: `tally-${this.id}`, maxReconnectAttempts: -1 });
    this.js = jetstream(this.nc);
    const jsm = await ensureStreams(this.nc, {
      eventRetentionMs: s.eventRetentionMs,
      dedupWindowMs: 2 * 60_000,
      dedupHorizonMs: s.dedupHorizonMs,
      replicas: 1,
    });
    this.store = await RocksStateStore.open(join(this.options.dataDir, "rocksdb"));
    this.results = new ResultsStore(this.store);
    this.host = new ShardHost(this.store, (metric) => this.known.get(metric), (result) => this.publishResult(result), s);
    const router = new Router([], s.shards);
    this.rulesStore = await RulesStore.open(this.nc);
    await this.rulesStore.seed(this.options.rules);
    this.stopWatchingRules = await this.rulesStore.watch(
      (rules) => {
        this.rules = rules;
        for (const rule of rules) this.known.set(rule.name, rule);
        router.setRules(rules);
      },
      (name, e) => console.error(`tally ${this.id}: rule "${name}" in the rules bucket is invalid and ignored: ${e.message}`),
    );
    const log = new RouterLog(this.js, jsm);
    const logError = (message: string) => console.error(`tally ${this.id}: ${message}`);

    // Results first, so nothing emitted below is missed by this node's view.
    await this.startTracked(jsm, `results-${this.id}`, streams.results, "results.>", (batch) => this.storeResults(batch));

    this.shardConsumer = new SupervisedConsumer(this.js, jsm, {
      name: "shards",
      stream: streams.mailbox,
      filter: "tally.mailbox.>",
      maxBatch: s.maxBatch,
      maxAckPending: 200_000,
      recover: () => this.host.recover(),
      handle: (batch) => this.host.deliver(batch),
      log: logError,
    });
    await this.shardConsumer.start();

    for (let p = 0; p < s.partitions; p++) {
      const ingest = new PartitionIngest(p, this.js, log, router, s, this.counters);
      this.ingests.push(ingest);
      const supervised = new SupervisedConsumer(this.js, jsm, {
        name: `router-${p}`,
        stream: streams.events,
        filter: subjects.events(p),
        maxBatch: s.maxBatch,
        maxAckPending: 20_000,
        recover: () => ingest.recover(),
        handle: (batch) => ingest.handle(batch),
        log: logError,
      });
      this.routers.push(supervised);
      await supervised.start();
    }
    await this.startTracked(jsm, "strays", streams.events, subjects.strays, async (batch) => {
      this.counters.messages += batch.length;
      this.counters.rejected += await fileStrays(this.js, batch);
    });
    this.jsm = jsm;
    this.membership = await Membership.open(this.nc);
    await this.membership.join(() => this.memberInfo(), 1_000, (e) => console.error(`tally ${this.id}: heartbeat: ${e.message}`));
    this.watermarkTimer = setInterval(() => void this.sendWatermarks(), s.watermarkIntervalMs);
    this.retentionTimer = setInterval(() => void this.enforceRetention(), s.retentionSweepMs);
    await this.enforceRetention();
    this.ready = true;
  }

  /** Graceful: routers stop, the window actors checkpoint, then the connection drains. */
  async stop(): Promise<void> {
    this.ready = false;
    clearInterval(this.watermarkTimer);
    clearInterval(this.retentionTimer);
    this.stopWatchingRules?.();
    await this.membership?.leave(this.id);
    for (const router of this.routers) await router.stop();
    await this.shardConsumer?.stop();
    await this.host.checkpoint().catch((e) => console.error(`tally ${this.id}: final checkpoint failed: ${(e as Error).message}`));
    this.host.actors.reset();
    for (const consumer of this.tracked.reverse()) await consumer.stop();
    await this.nc.drain();
    await this.store.close();
  }

  /** The node's event-time watermark: the least of its shards'. */
  get watermark(): number {
    return this.host?.watermark ?? -Infinity;
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

  query(q: ResultQuery): Promise<WindowResult[]> {
    return this.results.query(q);
  }

  onResult(listener: ResultListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Publishes events as robots would, on `telemetry.<source>.<kind>` (the HTTP edge uses it). */
  async publishEvents(events: { source: string; kind: string; body: unknown }[]): Promise<void> {
    for (const e of events) this.nc.publish(subjects.telemetry(e.source, e.kind), JSON.stringify(e.body));
    await this.nc.flush();
  }

  status() {
    return {
      node: this.id,
      ready: this.ready,
      watermark: finiteOrNull(this.watermark),
      activeWindows: this.host?.actors.activeCount ?? 0,
      checkpoints: this.host?.checkpoints ?? 0,
      counters: this.counters,
      folded: this.host?.folded() ?? {},
      partitions: this.ingests.map((i) => ({ partition: i.partition, ...i.mark(Date.now()) })),
      shards: [...(this.host?.shards.values() ?? [])].map((s) => ({ shard: s.id, watermark: finiteOrNull(s.watermark), pendingTimers: s.pendingTimers })),
    };
  }

  /** This node's heartbeat: what it owns, its watermark, and how far behind its consumers are. */
  private async memberInfo() {
    const pending = async (stream: string, consumer: string) => (await this.jsm.consumers.info(stream, consumer).catch(() => undefined))?.num_pending ?? 0;
    const partitions: Record<string, number> = {};
    for (const ingest of this.ingests) partitions[ingest.partition] = await pending(streams.events, `router-${ingest.partition}`);
    return {
      id: this.id,
      http: this.httpUrl,
      startedAt: this.startedAt,
      heartbeatAt: Date.now(),
      partitions: this.ingests.map((i) => i.partition),
      shards: [...this.host.shards.keys()],
      watermark: finiteOrNull(this.watermark),
      lag: { partitions, mailbox: await pending(streams.mailbox, "shards") },
      folded: this.host.folded(),
    };
  }

  /** Deletes aggregates older than their window size's retention from this node's results store. */
  async enforceRetention(now = Date.now()): Promise<void> {
    for (const { metric, window, cutoff } of expiredRanges([...this.known.values()], this.settings.retention, now)) {
      await dropResultsBefore(this.store, metric, window, cutoff).catch((e) => console.error(`retention ${metric}/${window}: ${(e as Error).message}`));
    }
  }

  /**
   * A consumer whose work is idempotent (the results view, DLQ filing) still must not skip a
   * message: it resumes from the last sequence it finished, kept in RocksDB, and recovers on a gap.
   */
  private async startTracked(jsm: JetStreamManager, name: string, stream: string, filter: string, handle: (batch: JsMsg[]) => Promise<void>) {
    const key = `position/${name}`;
    const consumer = new SupervisedConsumer(this.js, jsm, {
      name,
      stream,
      filter,
      maxBatch: this.settings.maxBatch,
      maxAckPending: 20_000,
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

  private async sendWatermarks(): Promise<void> {
    const now = Date.now();
    const body = encodeMailbox({ type: "marks", marks: this.ingests.map((i) => [i.partition, i.mark(now)]) });
    try {
      await Promise.all([...this.host.shards.keys()].map((shard) => this.js.publish(subjects.mailbox(shard), body)));
    } catch (e) {
      if (this.ready) console.error("watermarks:", (e as Error).message);
    }
  }

  private publishResult(result: WindowResult): Promise<unknown> {
    const subject = subjects.results(result.metric, result.window);
    const options = result.status === "provisional" ? {} : { msgID: resultId(result) };
    return this.js.publish(subject, JSON.stringify(result), options);
  }

  private async storeResults(batch: JsMsg[]): Promise<void> {
    for (const m of batch) {
      const result = JSON.parse(m.string()) as WindowResult;
      if (await this.results.put(result)) for (const listener of this.listeners) listener(result);
    }
  }
}

/** Sinks are idempotent by (window key, revision); JetStream drops a re-emitted final/correction. */
function resultId(result: WindowResult): string {
  return `${createHash("sha1").update(result.key).digest("base64url")}#${result.revision}`;
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

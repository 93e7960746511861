import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { listEntries } from "./kv-list.js";

export const membersBucket = "TALLY_NODES";

/** What a node says about itself every heartbeat. */
export interface MemberInfo {
  id: string;
  /** Where its HTTP API answers. */
  http?: string;
  /** Stopping gracefully: it hands its units over and gets no new ones. */
  leaving?: boolean;
  startedAt: number;
  heartbeatAt: number;
  partitions: number[];
  shards: number[];
  /** Event-time watermark of its shards (ms), null before any event. */
  watermark: number | null;
  /** Messages waiting in its consumers: per partition (events), per shard (mailbox), and all its shards' mailbox together. */
  lag: { partitions: Record<string, number>; shards: Record<string, number>; mailbox: number };
  /** Events its shards folded into `__other__` series, per metric (rules with `maxSeries`). */
  folded?: Record<string, number>;
}

/**
 * Membership lives in NATS: each node puts its heartbeat in a KV bucket whose entries expire
 * (bucket-level max_age; per-key TTLs need NATS 2.10). A node that stops heartbeating drops out
 * after `ttlMs`.
 */
export class Membership {
  private timer?: NodeJS.Timeout;
  private beat?: () => Promise<void>;

  private constructor(
    private readonly kv: KV,
    private readonly jsm: JetStreamManager,
  ) {}

  static async open(nc: NatsConnection, ttlMs = 5_000, replicas = 1): Promise<Membership> {
    return new Membership(await new Kvm(nc).create(membersBucket, { ttl: ttlMs, history: 1, replicas }), await jetstreamManager(nc));
  }

  /** Heartbeats `info()` now and every `intervalMs` until `stop`. */
  async join(info: () => Promise<MemberInfo>, intervalMs = 1_000, onError: (e: Error) => void = () => {}): Promise<void> {
    const beat = (this.beat = async () => {
      const me = await info();
      await this.kv.put(me.id, JSON.stringify(me));
    });
    await beat();
    this.timer = setInterval(() => beat().catch(onError), intervalMs);
  }

  /** Heartbeats now, rather than at the next interval: what the node says about itself changed. */
  async beatNow(): Promise<void> {
    await this.beat?.();
  }

  /** Stops heartbeating without leaving: the entry expires after the TTL, as when a node dies. */
  stopHeartbeat(): void {
    clearInterval(this.timer);
  }

  /** Leaves at once (a graceful stop), rather than after the heartbeat expires. */
  async leave(id: string): Promise<void> {
    clearInterval(this.timer);
    await this.kv.delete(id).catch(() => undefined);
  }

  async members(): Promise<MemberInfo[]> {
    const entries = await listEntries(this.jsm, this.kv, membersBucket);
    return entries.map((e) => e.json<MemberInfo>()).sort((a, b) => a.id.localeCompare(b.id));
  }
}

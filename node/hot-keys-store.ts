import { createHash } from "node:crypto";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { HotSeries } from "../actors/hot-keys.js";
import { listEntries } from "../cluster/kv-list.js";
import { watchBucket } from "./kv-watch.js";

export const hotKeysBucket = "TALLY_HOT_KEYS";

/**
 * Salting starts (and stops) for events that arrive this long after the decision is stored: time
 * enough for every router to have seen it, so a batch routes the same way when it is replayed.
 */
export const hotKeyDelayMs = 2_000;

/**
 * Which series are salted, in a NATS KV bucket, so every router applies the same decision. A
 * shard that sees a series' inbound rate pass the threshold marks it hot; it marks it cool again
 * once the rate stays low. Operators can also mark a series hot by hand (`tally hot`).
 */
export class HotKeysStore {
  private constructor(
    private readonly kv: KV,
    private readonly jsm: JetStreamManager,
  ) {}

  static async open(nc: NatsConnection, replicas = 1): Promise<HotKeysStore> {
    return new HotKeysStore(await new Kvm(nc).create(hotKeysBucket, { history: 1, replicas }), await jetstreamManager(nc));
  }

  async get(metric: string, dimsId: string): Promise<HotSeries | undefined> {
    const entry = await this.kv.get(keyOf(metric, dimsId));
    return entry?.operation === "PUT" ? entry.json<HotSeries>() : undefined;
  }

  async put(series: HotSeries): Promise<void> {
    await this.kv.put(keyOf(series.metric, series.dimsId), JSON.stringify(series));
  }

  async remove(metric: string, dimsId: string): Promise<void> {
    await this.kv.delete(keyOf(metric, dimsId));
  }

  async list(): Promise<HotSeries[]> {
    return (await listEntries(this.jsm, this.kv, hotKeysBucket)).map((e) => e.json<HotSeries>());
  }

  /** Calls `onChange` with every salted series: once with what is stored, then after every change. */
  async watch(onChange: (series: HotSeries[]) => void): Promise<() => void> {
    return watchBucket(this.kv, () => listEntries(this.jsm, this.kv, hotKeysBucket), (entry) => entry.json<HotSeries>(), onChange);
  }
}

/** KV keys allow few characters; series ids are any JSON. */
function keyOf(metric: string, dimsId: string): string {
  return createHash("sha1").update(`${metric}\t${dimsId}`).digest("hex");
}

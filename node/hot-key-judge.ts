import type { NatsConnection } from "@nats-io/transport-node";
import { HotKeyDetector, type HotKeyPolicy } from "../actors/hot-key-detector.js";
import type { HotSeries } from "../actors/hot-keys.js";
import { hotKeyDelayMs, HotKeysStore } from "./hot-keys-store.js";

/**
 * A node's part in salting (README, "Hot keys"): it measures the series whose shards it hosts,
 * salts one that passes the threshold and unsalts it once quiet, by writing the hot-keys bucket;
 * and it hands every change of that bucket to its routers.
 */
export class HotKeyJudge {
  private series: HotSeries[] = [];
  private readonly detector: HotKeyDetector;
  private timer?: NodeJS.Timeout;
  private stopWatching?: () => void;

  private constructor(
    private readonly store: HotKeysStore,
    policy: HotKeyPolicy,
    private readonly salts: number,
  ) {
    this.detector = new HotKeyDetector(policy, Date.now());
  }

  /**
   * `decidesHere(metric, dimsId)`: this node hosts the series' shard (where its events arrive).
   * `onChange`: the salted series, now and after every change (for the routers).
   */
  static async start(
    nc: NatsConnection,
    opts: { policy: HotKeyPolicy; salts: number; replicas: number; decidesHere: (metric: string, dimsId: string) => boolean; log: (message: string) => void },
    onChange: (series: HotSeries[]) => void,
  ): Promise<HotKeyJudge> {
    const judge = new HotKeyJudge(await HotKeysStore.open(nc, opts.replicas), opts.policy, opts.salts);
    judge.stopWatching = await judge.store.watch((series) => {
      judge.series = series;
      for (const hot of series) if (hot.until === undefined) judge.detector.markHot(hot.metric, hot.dimsId);
      onChange(series);
    });
    judge.timer = setInterval(() => void judge.judge(opts.decidesHere).catch((e) => opts.log(`hot keys: ${(e as Error).message}`)), 1_000);
    return judge;
  }

  /** Events that arrived for a window's series (its partials and its sub-actors' hand-overs), by the window's actor key. */
  observe(key: string, events: number): void {
    this.detector.observeKey(key, events);
  }

  /** Salted series (hot, or cooled and no longer salted after `until`). */
  get salted(): readonly HotSeries[] {
    return this.series;
  }

  stop(): void {
    clearInterval(this.timer);
    this.stopWatching?.();
  }

  private async judge(decidesHere: (metric: string, dimsId: string) => boolean, now = Date.now()): Promise<void> {
    const { hot, cool } = this.detector.check(now, decidesHere);
    const current = (metric: string, dimsId: string) => this.series.find((h) => h.metric === metric && h.dimsId === dimsId);
    for (const { metric, dimsId, rate } of hot) {
      const existing = current(metric, dimsId);
      if (existing && (existing.until === undefined || existing.until > now)) continue;
      await this.store.put({ metric, dimsId, salts: this.salts, from: now + hotKeyDelayMs, reason: "rate", rate });
    }
    for (const { metric, dimsId, rate } of cool) {
      const existing = current(metric, dimsId);
      // Hand-set series stay until an operator unsets them.
      if (!existing || existing.until !== undefined || existing.reason === "configured") continue;
      await this.store.put({ ...existing, until: now + hotKeyDelayMs, rate });
    }
  }
}

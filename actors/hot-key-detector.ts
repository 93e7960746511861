/** When a series counts as hot, and when as cool again. */
export interface HotKeyPolicy {
  /** Events per second into one series (all its windows of one metric) that make it hot. */
  thresholdPerSec: number;
  /** A hot series whose rate stays under a quarter of the threshold this long is cooled. */
  coolAfterMs: number;
}

export interface HotKeyVerdicts {
  /** Series that passed the threshold, with their rate (events/s). */
  hot: { metric: string; dimsId: string; rate: number }[];
  /** Hot series that have been quiet long enough. */
  cool: { metric: string; dimsId: string; rate: number }[];
}

interface Observed {
  metric: string;
  dimsId: string;
  /** Events in the current one-second bucket, and the rate of the last full one. */
  count: number;
  rate: number;
  hot: boolean;
  quietSince?: number;
}

/**
 * Measures each series' inbound rate at the shard that owns it (events carried by partials and,
 * once salted, by the sub-actors' forwards) and says when a series passes the threshold or, once
 * hot, has stayed quiet long enough. Pure: the node turns verdicts into hot-key entries.
 */
export class HotKeyDetector {
  private readonly series = new Map<string, Observed>();
  private bucketStart: number;

  constructor(
    private readonly policy: HotKeyPolicy,
    now: number,
  ) {
    this.bucketStart = now;
  }

  observe(metric: string, dimsId: string, events: number): void {
    const id = `${metric}\t${dimsId}`;
    let s = this.series.get(id);
    if (!s) this.series.set(id, (s = { metric, dimsId, count: 0, rate: 0, hot: false }));
    s.count += events;
  }

  /** Series already salted (from the hot-keys bucket), so they are watched for cooling. */
  markHot(metric: string, dimsId: string): void {
    this.observe(metric, dimsId, 0);
    this.series.get(`${metric}\t${dimsId}`)!.hot = true;
  }

  /**
   * Closes the current one-second bucket once it is over and returns what changed, for the
   * series `decidesHere` accepts (the others are measured, not judged: another node decides).
   */
  check(now: number, decidesHere: (metric: string, dimsId: string) => boolean = () => true): HotKeyVerdicts {
    const verdicts: HotKeyVerdicts = { hot: [], cool: [] };
    const elapsed = now - this.bucketStart;
    if (elapsed < 1_000) return verdicts;
    this.bucketStart = now;
    for (const [id, s] of this.series) {
      s.rate = (s.count * 1_000) / elapsed;
      s.count = 0;
      if (!decidesHere(s.metric, s.dimsId)) continue;
      if (!s.hot && s.rate >= this.policy.thresholdPerSec) {
        s.hot = true;
        s.quietSince = undefined;
        verdicts.hot.push({ metric: s.metric, dimsId: s.dimsId, rate: Math.round(s.rate) });
      } else if (s.hot && s.rate < this.policy.thresholdPerSec / 4) {
        s.quietSince ??= now;
        if (now - s.quietSince >= this.policy.coolAfterMs) {
          s.hot = false;
          verdicts.cool.push({ metric: s.metric, dimsId: s.dimsId, rate: Math.round(s.rate) });
        }
      } else if (s.hot) s.quietSince = undefined;
      if (!s.hot && s.rate === 0) this.series.delete(id);
    }
    return verdicts;
  }
}

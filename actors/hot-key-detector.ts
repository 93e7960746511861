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
  /** Its counter in the hashed first count. */
  hash: number;
}

/**
 * Measures each series' inbound rate at the shard that owns it (events carried by partials and,
 * once salted, by the sub-actors' forwards) and says when a series passes the threshold or, once
 * hot, has stayed quiet long enough. Pure: the node turns verdicts into hot-key entries.
 *
 * Every partial is observed, so this is on the hot path: with a million series a minute, an
 * entry (and an id string) per series seen each second was ~4% of a node's CPU. So events are
 * first counted in a small array of counters by a hash of the series, reset every second; only a
 * series whose counter reaches a quarter of the threshold (or one already tracked) gets an exact
 * entry, which starts from that counter. A counter may hold other series' events too (a
 * collision), so a rate can come out a little high, never low: at a million events per second
 * spread evenly, ~15 events/s per counter against thresholds of thousands.
 */
export class HotKeyDetector {
  private readonly series = new Map<string, Observed>();
  /** Events per series hash in the current bucket, and how many tracked series share each hash. */
  private readonly counts = new Float64Array(counters);
  private readonly tracked = new Uint16Array(counters);
  private readonly cutoff: number;
  private bucketStart: number;

  constructor(
    private readonly policy: HotKeyPolicy,
    now: number,
  ) {
    this.bucketStart = now;
    this.cutoff = policy.thresholdPerSec / 4;
  }

  observe(metric: string, dimsId: string, events: number): void {
    const h = hashRange(dimsId, 0, dimsId.length, hashRange(metric, 0, metric.length, fnvOffset)) & (counters - 1);
    const count = (this.counts[h] += events);
    if (count >= this.cutoff || this.tracked[h] > 0) this.track(metric, dimsId, h, count, events);
  }

  /** `observe` for an actor key's series (`metric\twindow\tstart\tdimsId`), read from the key where it lies. */
  observeKey(key: string, events: number): void {
    const a = key.indexOf("\t");
    const c = key.indexOf("\t", key.indexOf("\t", a + 1) + 1);
    const h = hashRange(key, c + 1, key.length, hashRange(key, 0, a, fnvOffset)) & (counters - 1);
    const count = (this.counts[h] += events);
    if (count >= this.cutoff || this.tracked[h] > 0) this.track(key.slice(0, a), key.slice(c + 1), h, count, events);
  }

  /** Series with an exact entry (status, tests). */
  get tracking(): number {
    return this.series.size;
  }

  /** Series already salted (from the hot-keys bucket), so they are watched for cooling. */
  markHot(metric: string, dimsId: string): void {
    const s = this.entry(metric, dimsId, hashRange(dimsId, 0, dimsId.length, hashRange(metric, 0, metric.length, fnvOffset)) & (counters - 1), 0);
    s.hot = true;
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
    this.counts.fill(0);
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
      if (!s.hot && s.rate === 0) {
        this.series.delete(id);
        this.tracked[s.hash]!--;
      }
    }
    return verdicts;
  }

  /** An exact entry from now on: a new one starts from its hash's counter (all of its bucket so far). */
  private track(metric: string, dimsId: string, h: number, count: number, events: number): void {
    const id = `${metric}\t${dimsId}`;
    const s = this.series.get(id);
    if (s) s.count += events;
    else this.entry(metric, dimsId, h, count);
  }

  private entry(metric: string, dimsId: string, hash: number, count: number): Observed {
    const id = `${metric}\t${dimsId}`;
    let s = this.series.get(id);
    if (!s) {
      this.series.set(id, (s = { metric, dimsId, hash, count, rate: 0, hot: false }));
      this.tracked[hash]!++;
    }
    return s;
  }
}

/** Counters of the first, hashed count (a power of two). */
const counters = 1 << 16;
const fnvOffset = 0x811c9dc5;

/** FNV-1a over the UTF-16 units of `s` from `from` to `to`, continuing from `h`. */
function hashRange(s: string, from: number, to: number, h: number): number {
  for (let i = from; i < to; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

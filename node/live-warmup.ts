import { DeliverPolicy, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import type { MetricRule } from "../actors/rules.js";
import type { WindowResult } from "../actors/window-result.js";
import type { LiveResults } from "./live-results.js";
import { resultsOf } from "./provisional-batcher.js";
import { isNewer } from "./results-store.js";
import { streams } from "./streams.js";

export interface WarmupOptions {
  /** Read what the results stream stored from this time on (ms)... */
  sinceMs: number;
  /** ...up to and including this sequence: where the live subscription began (it has the rest). */
  untilSeq: number;
  /** At most about this many bytes, the newest: what bounds the work at start. */
  maxBytes: number;
  /** Gives up after this long (a NATS that stops answering must not hold the node's start forever). */
  timeoutMs: number;
}

export interface WarmupReport {
  /** The first sequence read (0: nothing to read). */
  fromSeq: number;
  messages: number;
  bytes: number;
  /** Provisional results read, and how many windows the view took from them. */
  results: number;
  taken: number;
  /** The byte budget or the timeout cut the span short. */
  truncated: boolean;
  ms: number;
}

/**
 * How far back a start reads: long enough for the longest window (rollups included) of any rule,
 * plus its lateness, to have emitted its last provisional result within it, plus a margin for
 * watermark delay. A 1d rollup makes this a day; `maxBytes` keeps the newest part of that.
 */
export function warmupSpanMs(rules: Iterable<MetricRule>, marginMs = 60_000): number {
  let longest = 0;
  for (const rule of rules) {
    for (const w of [...rule.windows, ...rule.rollups]) longest = Math.max(longest, w.sizeMs + rule.latenessMs);
  }
  return longest + marginMs;
}

/**
 * Fills the live view, at start, with the provisional results of windows still open: the view is
 * memory only, so without this an open window whose last provisional result came before the
 * restart is missing from queries until its next change or its final.
 *
 * Reads the results stream from `sinceMs` (or later, within `maxBytes`) to `untilSeq` with an
 * ordered consumer, keeps per window its newest provisional result, and forgets a window once its
 * final or correction comes by (the results store has it; a final beats any provisional result
 * in queries anyway; a stale owner's final, which the store refused, costs that window its warm-up,
 * nothing more). Then offers the survivors to the view in stream order, so epoch fencing sees
 * them as the live subscription would have. What the view already holds (heard live meanwhile)
 * wins over an equal or older result; subscribers are not told (old news).
 *
 * Call it before the node's shards start: a result from a newer epoch of a shard, heard live,
 * would make everything older of that shard stale to the view.
 */
export async function warmLiveResults(js: JetStreamClient, jsm: JetStreamManager, live: LiveResults, opts: WarmupOptions): Promise<WarmupReport> {
  const started = Date.now();
  const report: WarmupReport = { fromSeq: 0, messages: 0, bytes: 0, results: 0, taken: 0, truncated: false, ms: 0 };
  const finish = () => ((report.ms = Date.now() - started), report);
  if (opts.untilSeq <= 0) return finish();

  let consumer = await js.consumers.get(streams.results, {
    deliver_policy: DeliverPolicy.StartTime,
    opt_start_time: new Date(Math.max(0, opts.sinceMs)).toISOString(),
  });
  // The server resolves the time to a sequence when it creates the consumer.
  let fromSeq = (await consumer.info(true)).delivered.stream_seq + 1;
  if (fromSeq > opts.untilSeq) {
    await consumer.delete().catch(() => undefined);
    return finish();
  }
  const state = (await jsm.streams.info(streams.results)).state;
  const averageBytes = state.messages > 0 ? state.bytes / state.messages : 1;
  const budget = Math.max(1, Math.floor(opts.maxBytes / averageBytes));
  if (opts.untilSeq - fromSeq + 1 > budget) {
    await consumer.delete().catch(() => undefined);
    fromSeq = opts.untilSeq - budget + 1;
    report.truncated = true;
    consumer = await js.consumers.get(streams.results, { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: fromSeq });
  }
  report.fromSeq = fromSeq;

  // Per window, its newest provisional result, by the view's own rule (a shard replaying after a
  // restart may publish an older one again); re-inserted when replaced, so the map's order is the
  // stream order of the results it keeps.
  const newest = new Map<string, WindowResult>();
  const messages = await consumer.consume({ max_messages: 256 });
  const timer = setTimeout(() => {
    report.truncated = true;
    messages.stop();
  }, opts.timeoutMs);
  try {
    for await (const m of messages) {
      if (m.seq > opts.untilSeq) break;
      report.messages++;
      report.bytes += m.data.length;
      try {
        for (const r of resultsOf(textDecoder.decode(m.data))) {
          if (r.status !== "provisional") {
            newest.delete(r.key);
            continue;
          }
          report.results++;
          const held = newest.get(r.key);
          if (held && isNewer(held, r)) continue;
          newest.delete(r.key);
          newest.set(r.key, r);
        }
      } catch {
        // Not a result of ours: nothing to warm from it.
      }
      if (m.seq === opts.untilSeq || m.info.pending === 0) break;
    }
  } finally {
    clearTimeout(timer);
    messages.stop();
    await consumer.delete().catch(() => undefined);
  }
  for (const r of newest.values()) if (live.warm(r)) report.taken++;
  return finish();
}

const textDecoder = new TextDecoder();

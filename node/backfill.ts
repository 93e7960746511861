import { DeliverPolicy, jetstream, type JetStreamClient, type JsMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { defaultLimits, type TelemetryEvent } from "../actors/event.js";
import { RecentIds } from "../actors/recent-ids.js";
import { Router } from "../actors/router.js";
import type { MetricRule } from "../actors/rules.js";
import { decodeEventMessage } from "./event-message.js";
import { encodeMailbox } from "./mailbox-codec.js";
import { streams, subjects } from "./streams.js";

export interface BackfillOptions {
  /** The rule as stored; events that arrived before its `activeFrom` are the ones to backfill. */
  rule: MetricRule;
  /** Oldest arrival time to backfill from (ms). */
  fromMs: number;
  partitions: number;
  shards: number;
  dedupHorizonMs: number;
  onProgress?: (partition: number, events: number) => void;
}

const batchSize = 1_000;

/**
 * Routes, for one new rule, the events still retained in JetStream that arrived before the rule
 * became active, so its windows end as if it had existed from the start. Live routers count the
 * events from `activeFrom` on: the two never overlap. Output goes to the shards like a router's,
 * with its own origin per partition and deterministic batches of 1,000 messages, so a re-run
 * after an interruption is de-duplicated by the shards (and by JetStream within an hour).
 */
export async function backfill(nc: NatsConnection, opts: BackfillOptions): Promise<number> {
  const js = jetstream(nc);
  const rule = { ...opts.rule, activeFrom: 0 };
  const router = new Router([rule], opts.shards);
  let total = 0;
  for (let p = 0; p < opts.partitions; p++) {
    const events = await backfillPartition(js, router, p, opts);
    total += events;
    opts.onProgress?.(p, events);
  }
  return total;
}

async function backfillPartition(js: JetStreamClient, router: Router, partition: number, opts: BackfillOptions): Promise<number> {
  const until = opts.rule.activeFrom;
  const origin = `bf:${opts.rule.name}@${until}:${partition}`;
  // Start a horizon early, so duplicates of events just before `fromMs` are recognised.
  const warmFrom = opts.fromMs - opts.dedupHorizonMs;
  const consumer = await js.consumers.get(streams.events, {
    filter_subjects: subjects.events(partition),
    deliver_policy: DeliverPolicy.StartTime,
    opt_start_time: new Date(Math.max(0, warmFrom)).toISOString(),
  });
  if (Date.now() > until && (await consumer.info()).num_pending === 0) return 0;
  const recent = new RecentIds(opts.dedupHorizonMs, warmFrom);
  let routed = 0;
  let batch: JsMsg[] = [];
  const flush = async () => {
    if (batch.length === 0) return;
    routed += await route(js, router, recent, batch, origin, partition, opts);
    batch = [];
  };
  for (;;) {
    const m = await consumer.next({ expires: 2_000 });
    if (!m) {
      // Nothing more stored; once `until` is past, nothing older can still arrive.
      if (Date.now() > until) break;
      continue;
    }
    if (m.info.timestampNanos / 1e6 >= until) break;
    batch.push(m);
    if (batch.length === batchSize) await flush();
    if (m.info.pending === 0 && Date.now() > until) break;
  }
  await flush();
  return routed;
}

async function route(
  js: JetStreamClient,
  router: Router,
  recent: RecentIds,
  messages: JsMsg[],
  origin: string,
  partition: number,
  opts: BackfillOptions,
): Promise<number> {
  const events: TelemetryEvent[] = [];
  for (const m of messages) {
    const arrivedAt = Math.floor(m.info.timestampNanos / 1e6);
    // Validated as at arrival, so an event the routers accepted then is accepted now.
    for (const event of decodeEventMessage(m, arrivedAt, defaultLimits).events) {
      if (recent.seen(event.id, arrivedAt)) continue;
      if (arrivedAt >= opts.fromMs) events.push(event);
    }
  }
  const first = messages[0]!.seq;
  const last = messages[messages.length - 1]!.seq;
  const { byShard } = router.route(events);
  await Promise.all(
    [...byShard].map(([shard, partials]) =>
      js.publish(subjects.mailbox(shard), encodeMailbox({ type: "partials", partition, origin, first, last, partials }), {
        msgID: `${origin}:${last}:${shard}`,
      }),
    ),
  );
  return events.length;
}

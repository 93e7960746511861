import { jetstreamManager, RetentionPolicy, StorageType, type JetStreamManager, type StreamConfig } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";

/** Every subject and stream Tally uses, in one place (README, "NATS subjects"). */
export const subjects = {
  /** Where robots publish; the server maps it onto `events` with a partition token. */
  telemetry: (source: string, kind: string) => `telemetry.${source}.${kind}`,
  events: (partition: number | "*") => `tally.events.${partition}.>`,
  /** Telemetry the partition mapping did not take: a wrong subject shape, or a server without the mapping. */
  strays: "telemetry.>",
  mailbox: (shard: number | "*") => `tally.mailbox.${shard}`,
  results: (metric: string, window: string) => `results.${metric}.${window}`,
  dlq: (reason: string) => `tally.dlq.${reason}`,
  routerLog: (partition: number) => `tally.routerlog.${partition}`,
  /** A shard's replicated actor state: a fenced, compacted changelog (node/shard-state-log.ts). */
  shardState: (shard: number) => `tally.state.${shard}`,
};

export const streams = {
  events: "TALLY_EVENTS",
  mailbox: "TALLY_MAILBOX",
  results: "TALLY_RESULTS",
  dlq: "TALLY_DLQ",
  routerLog: "TALLY_ROUTER_LOG",
  shardState: "TALLY_STATE",
} as const;

const hour = 3_600_000;
const day = 24 * hour;
const ns = (ms: number) => ms * 1_000_000;

export interface StreamOptions {
  eventRetentionMs: number;
  /** JetStream's own de-duplication by Nats-Msg-Id on the events stream (for publishers that set it). */
  dedupWindowMs: number;
  /** How long routers remember event ids: the router log keeps at least this much. */
  dedupHorizonMs: number;
  replicas: number;
}

export const defaultStreamOptions: StreamOptions = { eventRetentionMs: 7 * day, dedupWindowMs: 2 * 60_000, dedupHorizonMs: 10 * 60_000, replicas: 1 };

/** Creates Tally's streams, or updates them to the wanted limits. Idempotent; every node calls it at start. */
export async function ensureStreams(nc: NatsConnection, opts: StreamOptions = defaultStreamOptions): Promise<JetStreamManager> {
  const jsm = await jetstreamManager(nc);
  const base = { storage: StorageType.File, num_replicas: opts.replicas, retention: RetentionPolicy.Limits };
  const wanted: (Partial<StreamConfig> & { name: string })[] = [
    { ...base, name: streams.events, subjects: ["tally.events.>", "telemetry.>"], max_age: ns(opts.eventRetentionMs), duplicate_window: ns(opts.dedupWindowMs) },
    { ...base, name: streams.mailbox, subjects: ["tally.mailbox.>"], max_age: ns(1 * day), duplicate_window: ns(hour) },
    { ...base, name: streams.results, subjects: ["results.>"], max_age: ns(7 * day), duplicate_window: ns(hour) },
    { ...base, name: streams.dlq, subjects: ["tally.dlq.>"], max_age: ns(30 * day), duplicate_window: ns(hour) },
    { ...base, name: streams.routerLog, subjects: ["tally.routerlog.>"], max_age: ns(Math.max(day, opts.dedupHorizonMs + hour)), duplicate_window: ns(hour) },
  ];
  for (const config of wanted) await ensureStream(jsm, config);
  return jsm;
}

/** Creates a stream, or updates it to `config`'s limits. Idempotent. */
export async function ensureStream(jsm: JetStreamManager, config: Partial<StreamConfig> & { name: string }): Promise<void> {
  try {
    await jsm.streams.info(config.name);
    await jsm.streams.update(config.name, config);
  } catch (e) {
    if (!/stream not found/i.test(String((e as Error).message))) throw e;
    await jsm.streams.add(config);
  }
}

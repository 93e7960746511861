/**
 * A baseline consumer, a child process of the bench: a plain JetStream consumer on the events
 * stream (the same `consume()` batching Tally's routers use, max_messages 1000, AckAll) that
 * decodes each message and either only counts its events (the transport's ceiling, "limit") or
 * also does one Redis HINCRBY per event, pipelined per batch ("naive"). Reports `{done}` to the
 * parent every 100 ms.
 */
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type JsMsg } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { consumeInBatches } from "../../node/batched-consumer.js";
import { streams } from "../../node/streams.js";
import { EventColumns } from "../../actors/event-columns.js";
import { appendEventBatch } from "../../proto/append-event-batch.js";
import { decodeEventBatch } from "../../proto/codec.js";

export interface ConsumerSpec {
  nats: string;
  /** Set: one HINCRBY robot_cycle:<window start> <site> 1 per event on this Redis port. */
  redisPort?: number;
}

interface Counted {
  ts: number;
  tags?: Record<string, string>;
}

const spec = JSON.parse(process.argv[2]!) as ConsumerSpec;
const nc = await connect({ servers: spec.nats, name: "tally-bench-baseline" });
const jsm = await jetstreamManager(nc);
await jsm.consumers.add(streams.events, {
  durable_name: "baseline",
  filter_subject: "tally.events.>",
  ack_policy: AckPolicy.All,
  deliver_policy: DeliverPolicy.All,
  max_ack_pending: 20_000,
});
const consumer = await jetstream(nc).consumers.get(streams.events, "baseline");
const redis = spec.redisPort ? new (await import("ioredis")).Redis({ port: spec.redisPort, host: "127.0.0.1" }) : undefined;
const decoder = new TextDecoder();
let done = 0;

const columns = new EventColumns();

/** Decodes and counts, as Tally's routers decode a protobuf batch (into columns, no object per event). */
function count(m: JsMsg): number {
  if (m.headers?.get("Content-Type") !== "application/protobuf") return decode(m).length;
  const [, , , source = "", kind = ""] = m.subject.split(".");
  columns.reset();
  appendEventBatch(columns, m.data, columns.addMessage(m.data, source, kind), { source, kind }, 0);
  return columns.length;
}

function decode(m: JsMsg): Counted[] {
  if (m.headers?.get("Content-Type") === "application/protobuf") {
    const [, , , source = "", kind = ""] = m.subject.split(".");
    return decodeEventBatch(m.data, { source, kind });
  }
  const doc = JSON.parse(decoder.decode(m.data)) as Counted | Counted[];
  return Array.isArray(doc) ? doc : [doc];
}

await consumeInBatches(
  consumer,
  1000,
  async (batch) => {
    let events = 0;
    const replies: Promise<unknown>[] = [];
    for (const m of batch) {
      if (!redis) {
        events += count(m);
        continue;
      }
      const decoded = decode(m);
      events += decoded.length;
      // One pipeline per message, all in flight at once; ack once Redis answered them all.
      const pipeline = redis.pipeline();
      for (const e of decoded) pipeline.hincrby(`robot_cycle:${e.ts - (e.ts % 60_000)}`, e.tags?.site ?? "", 1);
      replies.push(pipeline.exec());
    }
    await Promise.all(replies);
    batch[batch.length - 1]!.ack();
    done += events;
  },
  (e) => console.error("baseline consumer:", e),
);
process.send!({ ready: true });
process.on("disconnect", () => process.exit(0)); // the bench is gone
setInterval(() => process.send!({ done }), 100);

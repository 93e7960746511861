import type { JetStreamClient, JsMsg } from "@nats-io/jetstream";
import { decodePayload } from "../actors/decode.js";
import type { Reject, TelemetryEvent, ValidationLimits } from "../actors/event.js";
import { RecentIds } from "../actors/recent-ids.js";
import type { Router } from "../actors/router.js";
import type { PartitionMark } from "../actors/window-shard.js";
import { fileRejects, type RejectOrigin } from "./dead-letters.js";
import { encodeMailbox } from "./mailbox-codec.js";
import { subjects } from "./streams.js";

export interface IngestSettings {
  limits: ValidationLimits;
  /** Bounded out-of-orderness: the watermark trails the max event time by this much. */
  outOfOrdernessMs: number;
  /** A partition with no events this long stops holding the watermark back. */
  idleTimeoutMs: number;
  /** How long an event id is remembered to drop a re-published duplicate. */
  dedupHorizonMs: number;
}

/** Counts a user can reconcile: every accepted event is aggregated, filed in the DLQ, or a duplicate. */
export interface IngestCounters {
  messages: number;
  events: number;
  duplicates: number;
  rejected: number;
  unmatched: number;
}

const protobufTypes = new Set(["application/protobuf", "application/x-protobuf"]);

/**
 * The router of one event partition: decode and validate (bad input to the DLQ), drop
 * duplicates, route to window actors' shards, then ack. Its watermark moves only after the
 * partials it reflects are stored in the mailbox stream.
 */
export class PartitionIngest {
  private maxEventTime = -Infinity;
  private lastEventAt: number;
  private readonly recent: RecentIds;

  constructor(
    readonly partition: number,
    private readonly js: JetStreamClient,
    private readonly router: Router,
    private readonly settings: IngestSettings,
    private readonly counters: IngestCounters,
    private readonly now: () => number = Date.now,
  ) {
    this.lastEventAt = now();
    this.recent = new RecentIds(settings.dedupHorizonMs, now());
  }

  async handle(batch: JsMsg[]): Promise<void> {
    const now = this.now();
    const events: TelemetryEvent[] = [];
    const rejects: { reject: Reject; origin: RejectOrigin }[] = [];
    let batchMax = -Infinity;
    for (const m of batch) {
      this.counters.messages++;
      const [, , , source = "", kind = ""] = m.subject.split(".");
      const protobuf = protobufTypes.has(m.headers?.get("Content-Type") ?? "");
      const decoded = decodePayload(m.data, source, kind, protobuf, now, this.settings.limits);
      decoded.rejects.forEach((reject, i) =>
        rejects.push({ reject, origin: { subject: subjects.telemetry(source, kind), id: `${this.partition}:${m.seq}:${i}` } }),
      );
      for (const event of decoded.events) {
        this.counters.events++;
        if (this.recent.seen(event.id, now)) {
          this.counters.duplicates++;
          continue;
        }
        events.push(event);
        if (event.ts > batchMax) batchMax = event.ts;
      }
    }
    this.counters.rejected += rejects.length;
    const routed = this.router.route(events);
    this.counters.unmatched += events.length - routed.matched;
    const last = batch[batch.length - 1]!;
    const publishes: Promise<unknown>[] = [fileRejects(this.js, rejects)];
    for (const [shard, partials] of routed.byShard) {
      const body = encodeMailbox({ type: "partials", partition: this.partition, partials });
      publishes.push(this.js.publish(subjects.mailbox(shard), body, { msgID: `${this.partition}:${last.seq}:${shard}` }));
    }
    await Promise.all(publishes);
    last.ack();
    if (events.length > 0) {
      this.lastEventAt = now;
      if (batchMax > this.maxEventTime) this.maxEventTime = batchMax;
    }
  }

  /** This partition's watermark as of `now`. */
  mark(now: number): PartitionMark {
    const { outOfOrdernessMs, idleTimeoutMs } = this.settings;
    const own = this.maxEventTime - outOfOrdernessMs;
    if (now - this.lastEventAt < idleTimeoutMs) return { watermark: own, idle: false };
    return { watermark: Math.max(own, now - outOfOrdernessMs), idle: true };
  }
}

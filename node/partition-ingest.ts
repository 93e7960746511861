import type { JetStreamClient, JsMsg } from "@nats-io/jetstream";
import { shardOfKey } from "../actors/actor-keys.js";
import { decodePayloadInto } from "../actors/decode.js";
import type { Reject, ValidationLimits } from "../actors/event.js";
import { EventColumns, type RowGate } from "../actors/event-columns.js";
import { RecentIds, staggeredLoad } from "../actors/recent-ids.js";
import { Outcome, type Router, type WindowPartial } from "../actors/router.js";
import type { PartitionMark } from "../actors/window-shard.js";
import type { AckedPublisher } from "./acked-publisher.js";
import { AuditTally } from "./audit.js";
import { fileRejects, type RejectOrigin } from "./dead-letters.js";
import { isProtobuf } from "./event-message.js";
import { encodeMailbox } from "./mailbox-codec.js";
import type { RouterLog } from "./router-log.js";
import { subjects } from "./streams.js";

export interface IngestSettings {
  limits: ValidationLimits;
  /** Bounded out-of-orderness: the watermark trails the max event time by this much. */
  outOfOrdernessMs: number;
  /** A partition with no events this long stops holding the watermark back. */
  idleTimeoutMs: number;
  /** How long an event id is remembered to drop a re-published duplicate. */
  dedupHorizonMs: number;
  shards: number;
}

/** Live counters for status pages; the exact, crash-proof numbers are the `_audit` metric. */
export interface IngestCounters {
  messages: number;
  events: number;
  duplicates: number;
  rejected: number;
  unmatched: number;
}

/**
 * The router of one event partition: decode and validate (bad input to the DLQ), drop
 * duplicates, route to window actors' shards, then ack.
 *
 * Exactly once: before any output, a batch is recorded in the router log (its sequence range,
 * the ids it accepted, the watermark). After a crash the partition resumes from its log: the last
 * logged batch is replayed with exactly the same boundaries, so its output carries the same
 * identity and the shards drop what they had already applied.
 */
export class PartitionIngest {
  private maxEventTime = -Infinity;
  private lastEventAt: number;
  private recent: RecentIds;
  /** The batch being routed, reused batch after batch. */
  private readonly columns = new EventColumns();
  /** The last logged batch, to replay exactly before anything new. */
  private redo?: { first: number; last: number; buffer: JsMsg[] };
  /** Event messages up to here are done (their batch is logged and was output). */
  private doneThrough = 0;
  /**
   * Nothing waits in the stream for this router: known from the consumer at its start, from each
   * batch, or confirmed by asking the consumer (`confirmCaughtUp`). Only then can quiet mean
   * idle; a router that is stuck or recovering is never idle.
   */
  private caughtUp = false;
  /** The last event message handled (routed or skipped). */
  private handledThrough = 0;
  /** Batches begun: a confirmation asked for before the latest one began is stale. */
  batchesBegun = 0;

  constructor(
    readonly partition: number,
    private readonly js: JetStreamClient,
    private readonly publisher: AckedPublisher,
    private readonly log: RouterLog,
    private readonly router: Router,
    private readonly settings: IngestSettings,
    private readonly counters: IngestCounters,
    private readonly now: () => number = Date.now,
  ) {
    this.lastEventAt = now();
    this.recent = new RecentIds(settings.dedupHorizonMs, now(), undefined, staggeredLoad(partition));
  }

  /** Rebuilds state from the router log. Returns the event sequence to consume from. */
  async recover(): Promise<number> {
    const now = this.now();
    const { last, earlier } = await this.log.recover(this.partition, this.settings.dedupHorizonMs, now);
    this.recent = new RecentIds(this.settings.dedupHorizonMs, now, undefined, staggeredLoad(this.partition));
    for (const { fingerprints } of earlier) this.recent.restoreFingerprints(fingerprints, now);
    if (!last) return 1;
    this.maxEventTime = last.prevMaxTs ?? -Infinity;
    this.redo = { first: last.first, last: last.last, buffer: [] };
    this.doneThrough = last.first - 1;
    return last.first;
  }

  /** The consumer (re)started with `pending` messages to deliver. */
  started(pending: number): void {
    this.caughtUp = pending === 0;
  }

  stalled(): void {
    this.caughtUp = false;
  }

  /** Not known to be caught up: worth asking the consumer. */
  /** Bytes of the de-duplication table (typed arrays, both while it migrates). */
  get dedupBytes(): number {
    return this.recent.bytes;
  }

  get needsConfirmation(): boolean {
    return !this.caughtUp && !this.redo && this.handledThrough > 0;
  }

  /**
   * The consumer's word: nothing undelivered and nothing delivered but unacked. This router acks
   * a batch only once it is handled, so then everything in the stream for it is handled.
   */
  confirmCaughtUp(undelivered: number, unacked: number, askedAfterBatch: number): void {
    if (undelivered === 0 && unacked === 0 && askedAfterBatch === this.batchesBegun) this.caughtUp = true;
  }

  async handle(batch: JsMsg[]): Promise<void> {
    this.batchesBegun++;
    let fresh: JsMsg[] = [];
    for (const m of batch) {
      if (m.seq <= this.doneThrough) continue;
      if (this.redo) {
        if (m.seq <= this.redo.last) this.redo.buffer.push(m);
        if (m.seq < this.redo.last) continue;
        // The logged batch is complete (or its tail expired from the stream): replay it as logged.
        const { buffer, first, last } = this.redo;
        this.redo = undefined;
        await this.process(buffer, first, last, true);
        if (m.seq <= last) continue;
      }
      fresh.push(m);
    }
    if (fresh.length > 0) await this.process(fresh, fresh[0]!.seq, fresh[fresh.length - 1]!.seq, false);
    const last = batch[batch.length - 1]!;
    last.ack();
    this.handledThrough = last.seq;
    // The server's per-message pending count can be one too high with filtered consumers (2.9);
    // zero is trustworthy, anything else waits for `confirmCaughtUp`.
    this.caughtUp = last.info.pending === 0;
  }

  /** This partition's watermark as of `now`. */
  mark(now: number): PartitionMark {
    const { outOfOrdernessMs, idleTimeoutMs } = this.settings;
    const own = this.maxEventTime - outOfOrdernessMs;
    if (now - this.lastEventAt < idleTimeoutMs || this.redo || !this.caughtUp) return { watermark: own, idle: false };
    return { watermark: Math.max(own, now - outOfOrdernessMs), idle: true };
  }

  private async process(messages: JsMsg[], first: number, last: number, logged: boolean): Promise<void> {
    const now = this.now();
    const columns = this.columns;
    columns.reset(this.router.reads);
    const rejects: { reject: Reject; origin: RejectOrigin }[] = [];
    const audit = new AuditTally();
    let duplicates = 0;
    const recent = this.recent;
    const dedup: RowGate = {
      prepare: (fingerprints, count) => recent.prefetch(fingerprints, 0, count),
      admit: (row) => {
        if (!recent.seenFingerprint(columns.fingerprint, row, now)) return true;
        duplicates++;
        return false;
      },
    };
    for (let k = 0; k < messages.length; k++) {
      const m = messages[k]!;
      this.counters.messages++;
      const arrivedAt = Math.floor(m.info.timestampNanos / 1e6);
      const [, , , source = "", kind = ""] = m.subject.split(".");
      const message = columns.addMessage(m.data, source, kind);
      const rowsBefore = columns.length;
      duplicates = 0;
      const refused = decodePayloadInto(columns, message, arrivedAt, isProtobuf(m), now, this.settings.limits, dedup);
      refused.forEach((reject, i) =>
        rejects.push({ reject, origin: { subject: subjects.telemetry(source, kind), id: `${this.partition}:${m.seq}:${i}` } }),
      );
      const events = columns.length - rowsBefore + duplicates;
      audit.add(arrivedAt, "accepted", events + refused.length);
      audit.add(arrivedAt, "dlq", refused.length);
      audit.add(arrivedAt, "duplicates", duplicates);
      this.counters.events += events;
      this.counters.duplicates += duplicates;
    }
    let batchMax = -Infinity;
    for (let i = 0; i < columns.length; i++) if (columns.ts[i]! > batchMax) batchMax = columns.ts[i]!;

    // Lateness is judged against the watermark before this batch: the same on a replay.
    const routed = this.router.routeColumns(columns, this.maxEventTime - this.settings.outOfOrdernessMs, this.partition);
    // Outcomes are counted per run of events with the same arrival time (a message's events).
    const outcomeCounts = [0, 0, 0];
    for (let i = 0; i < columns.length; i++) {
      const outcome = routed.outcomes[i]!;
      outcomeCounts[outcome]!++;
      if (outcome === Outcome.TooLate) {
        const { source, kind, ...original } = columns.event(i);
        const m = messages[columns.message[i]!]!;
        rejects.push({
          reject: {
            reason: "too_late",
            detail: `event time ${new Date(original.ts).toISOString()} is past the correction horizon of every matching window`,
            raw: Buffer.from(JSON.stringify(original)),
          },
          origin: { subject: subjects.telemetry(source, kind), id: `${this.partition}:${m.seq}:late${columns.indexInMessage[i]}` },
        });
      }
      if (i + 1 === columns.length || columns.arrival[i + 1] !== columns.arrival[i]) {
        const arrivedAt = columns.arrival[i]!;
        audit.add(arrivedAt, "aggregated", outcomeCounts[Outcome.Aggregated]);
        audit.add(arrivedAt, "unmatched", outcomeCounts[Outcome.Unmatched]);
        audit.add(arrivedAt, "dlq", outcomeCounts[Outcome.TooLate]);
        this.counters.unmatched += outcomeCounts[Outcome.Unmatched]!;
        outcomeCounts.fill(0);
      }
    }
    this.counters.rejected += rejects.length;

    const prevMaxTs = this.maxEventTime;
    const maxTs = Math.max(prevMaxTs, batchMax);
    if (!logged) {
      await this.log.append({
        partition: this.partition,
        first,
        last,
        prevMaxTs: Number.isFinite(prevMaxTs) ? prevMaxTs : null,
        maxTs: Number.isFinite(maxTs) ? maxTs : null,
        fingerprints: columns.fingerprint.subarray(0, 3 * columns.length),
        at: now,
      });
    }
    const byShard = routed.byShard;
    for (const partial of audit.partials()) addTo(byShard, shardOfKey(partial.key, this.settings.shards), partial);
    const publishes: Promise<unknown>[] = [fileRejects(this.js, rejects)];
    for (const [shard, partials] of byShard) {
      const body = encodeMailbox({ type: "partials", partition: this.partition, first, last, partials });
      publishes.push(this.publisher.publish(subjects.mailbox(shard), body, { msgID: `${this.partition}:${last}:${shard}` }));
    }
    await Promise.all(publishes);
    this.doneThrough = last;
    if (columns.length > 0) this.lastEventAt = now;
    this.maxEventTime = maxTs;
  }
}

function addTo(byShard: Map<number, WindowPartial[]>, shard: number, partial: WindowPartial) {
  const list = byShard.get(shard);
  if (list) list.push(partial);
  else byShard.set(shard, [partial]);
}

import { DeliverPolicy, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { streams, subjects } from "./streams.js";

/**
 * What a partition's router decided for one batch, written before any of its output. It is the
 * router's checkpoint: where the partition stands, the watermark, and the ids it accepted (the
 * de-duplication memory). It lives in JetStream, so whichever node routes the partition next can
 * pick it up: a dead node's disk is never needed.
 */
export interface BatchRecord {
  partition: number;
  /** Stream sequences of the batch's first and last event messages. */
  first: number;
  last: number;
  /** Max event time before and after the batch (null: none seen yet). */
  prevMaxTs: number | null;
  maxTs: number | null;
  /** Ids of the events the batch accepted (new within the de-duplication horizon). */
  ids: string[];
  /** When the batch was routed (ms); ids expire from the horizon by it. */
  at: number;
}

export interface RecoveredLog {
  /** The last record: its batch is replayed exactly, with the same boundaries, on recovery. */
  last?: BatchRecord;
  /** Ids of every record within the horizon except the last, oldest first, with their record time. */
  earlier: { ids: string[]; at: number }[];
}

/**
 * One writer per partition: each append expects the log's last record to be the one this router
 * last wrote or recovered, so a router that lost its partition to another node (and has not
 * noticed yet) fails its next append, before it outputs anything for that batch.
 */
export class RouterLog {
  /** Per partition, the stream sequence of the last record this process wrote or recovered. */
  private readonly lastSeq = new Map<number, number>();

  constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
  ) {}

  async append(record: BatchRecord): Promise<void> {
    const ack = await this.js.publish(subjects.routerLog(record.partition), JSON.stringify(record), {
      msgID: `${record.partition}:${record.last}`,
      expect: { lastSubjectSequence: this.lastSeq.get(record.partition) ?? 0 },
    });
    this.lastSeq.set(record.partition, ack.seq);
  }

  async recover(partition: number, horizonMs: number, now: number): Promise<RecoveredLog> {
    const subject = subjects.routerLog(partition);
    const lastMsg = await this.jsm.streams.getMessage(streams.routerLog, { last_by_subj: subject }).catch((e: Error) => {
      if (/no message found/i.test(e.message)) return null;
      throw e;
    });
    this.lastSeq.set(partition, lastMsg?.seq ?? 0);
    if (!lastMsg) return { earlier: [] };
    const last = lastMsg.json<BatchRecord>();
    const since = now - horizonMs;
    const earlier: { ids: string[]; at: number }[] = [];
    if (last.at >= since && lastMsg.seq > 1) {
      const consumer = await this.js.consumers.get(streams.routerLog, {
        filter_subjects: subject,
        deliver_policy: DeliverPolicy.StartTime,
        opt_start_time: new Date(since).toISOString(),
      });
      const messages = await consumer.consume();
      for await (const m of messages) {
        if (m.seq >= lastMsg.seq) break;
        const record = m.json<BatchRecord>();
        earlier.push({ ids: record.ids, at: record.at });
      }
      messages.stop();
    }
    return { last, earlier };
  }
}

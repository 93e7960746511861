import { DeliverPolicy, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { idFingerprint } from "../actors/id-fingerprint.js";
import type { AckedPublisher } from "./acked-publisher.js";
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
  /** Fingerprints (`idFingerprint`, three words each) of the ids of the events the batch accepted (new within the de-duplication horizon). */
  fingerprints: Uint32Array;
  /** When the batch was routed (ms); ids expire from the horizon by it. */
  at: number;
}

export interface RecoveredLog {
  /** The last record: its batch is replayed exactly, with the same boundaries, on recovery. */
  last?: BatchRecord;
  /** Fingerprints of every record within the horizon except the last, oldest first, with their record time. */
  earlier: { fingerprints: Uint32Array; at: number }[];
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
    private readonly publisher: AckedPublisher,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
  ) {}

  async append(record: BatchRecord): Promise<void> {
    const ack = await this.publisher.publish(subjects.routerLog(record.partition), encodeRecord(record), {
      msgID: `${record.partition}:${record.last}`,
      expectLastSubjectSequence: this.lastSeq.get(record.partition) ?? 0,
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
    const last = decodeRecord(lastMsg.data);
    const since = now - horizonMs;
    const earlier: RecoveredLog["earlier"] = [];
    if (last.at >= since && lastMsg.seq > 1) {
      const consumer = await this.js.consumers.get(streams.routerLog, {
        filter_subjects: subject,
        deliver_policy: DeliverPolicy.StartTime,
        opt_start_time: new Date(since).toISOString(),
      });
      const messages = await consumer.consume();
      for await (const m of messages) {
        if (m.seq >= lastMsg.seq) break;
        const { fingerprints, at } = decodeRecord(m.data);
        earlier.push({ fingerprints, at });
      }
      messages.stop();
    }
    return { last, earlier };
  }
}

/**
 * A record is a little-endian u32 header length, the header (JSON: everything but the
 * fingerprints), then the fingerprints' bytes: 12 bytes an event, copied, not formatted.
 */
export function encodeRecord(record: BatchRecord): Uint8Array {
  const { fingerprints, ...header } = record;
  const head = Buffer.from(JSON.stringify(header));
  const out = Buffer.allocUnsafe(4 + head.length + fingerprints.byteLength);
  out.writeUInt32LE(head.length, 0);
  head.copy(out, 4);
  Buffer.from(fingerprints.buffer, fingerprints.byteOffset, fingerprints.byteLength).copy(out, 4 + head.length);
  if (!littleEndian) for (let j = 0; j < fingerprints.length; j++) out.writeUInt32LE(fingerprints[j]!, 4 + head.length + 4 * j);
  return out;
}

/** Reads `encodeRecord`'s format, or a record of earlier versions (one JSON document with the ids themselves). */
export function decodeRecord(data: Uint8Array): BatchRecord {
  const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (bytes[0] === 0x7b /* { */) {
    const { ids, ...rest } = JSON.parse(bytes.toString()) as Omit<BatchRecord, "fingerprints"> & { ids: string[] };
    const fingerprints = new Uint32Array(3 * ids.length);
    ids.forEach((id, i) => fingerprints.set(idFingerprint(id), 3 * i));
    return { ...rest, fingerprints };
  }
  const headLength = bytes.readUInt32LE(0);
  const header = JSON.parse(bytes.subarray(4, 4 + headLength).toString()) as Omit<BatchRecord, "fingerprints">;
  const body = bytes.subarray(4 + headLength);
  const fingerprints = new Uint32Array(body.length / 4);
  for (let j = 0; j < fingerprints.length; j++) fingerprints[j] = body.readUInt32LE(4 * j);
  return { ...header, fingerprints };
}

const littleEndian = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

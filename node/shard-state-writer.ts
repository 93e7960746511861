import { JetStreamApiCodes, JetStreamApiError, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { headers } from "@nats-io/transport-node";
import { ChunkPacker, commitBody, header, isCommit, maxRecordBytes, readRecordInfo, type RecordInfo, type RecordKind } from "./shard-state-records.js";
import { streams, subjects } from "./streams.js";

/** A writer's ownership was superseded: a writer with a newer (or its same) epoch fenced the log. */
export class FencedError extends Error {
  constructor(
    readonly shard: number,
    readonly epoch: number,
    /** The epoch on the log when this was noticed, if known. */
    readonly logEpoch?: number,
  ) {
    super(`shard ${shard}: state writer at epoch ${epoch} is fenced${logEpoch === undefined ? "" : ` (the log is at epoch ${logEpoch})`}`);
    this.name = "FencedError";
  }
}

export interface StateChanges {
  puts: [key: string, value: Uint8Array][];
  /** Applied after the puts: a key both put and deleted ends deleted. */
  deletes: string[];
  /** What the checkpoint stands for (e.g. the mailbox position applied), returned by restore. */
  meta: Uint8Array;
}

export type LogTail = RecordInfo & { seq: number };

function isWrongLastSequence(e: unknown): boolean {
  return (
    e instanceof JetStreamApiError &&
    (e.code === JetStreamApiCodes.StreamWrongLastSequence || e.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}

/** The last record of a shard's log, or undefined when the log is empty. */
export async function readTail(jsm: JetStreamManager, shard: number): Promise<LogTail | undefined> {
  const last = await jsm.streams.getMessage(streams.shardState, { last_by_subj: subjects.shardState(shard) }).catch((e: unknown) => {
    if (e instanceof JetStreamApiError && e.code === JetStreamApiCodes.NoMessageFound) return null;
    throw e;
  });
  return last ? { seq: last.seq, ...readRecordInfo(last.seq, last.header) } : undefined;
}

/** Fences after this many lost races with a still-writing stale owner before giving up. */
const fenceAttempts = 10;

/**
 * The only writer of a shard's state log while its epoch is current. Every record it publishes
 * expects the previous one's stream sequence on the shard's subject, so once anyone else
 * appends (a newer owner's fence), its next publish is refused and it throws FencedError.
 * Any failed publish leaves it unusable: after a timeout nobody knows whether the record
 * landed, so the chain is lost; open a new writer (its fence voids any half-written checkpoint).
 */
export class ShardStateWriter {
  private readonly subject: string;
  private failure?: Error;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    readonly shard: number,
    readonly epoch: number,
    private lastSequence: number,
    private checkpoint: number,
    private sinceSnapshot: number,
  ) {
    this.subject = subjects.shardState(shard);
  }

  /**
   * Appends a fence chained to the log's current tail, refusing when the tail is from a newer
   * epoch. The same epoch may fence again: that is the same ownership reopening its writer.
   */
  static async fence(js: JetStreamClient, jsm: JetStreamManager, shard: number, epoch: number): Promise<ShardStateWriter> {
    for (let attempt = 1; ; attempt++) {
      const tail = await readTail(jsm, shard);
      if (tail && tail.epoch > epoch) throw new FencedError(shard, epoch, tail.epoch);
      const writer = new ShardStateWriter(js, jsm, shard, epoch, tail?.seq ?? 0, tail?.checkpointId ?? 0, tail?.sinceSnapshot ?? 0);
      try {
        await writer.append("fence", new Uint8Array(0));
        return writer;
      } catch (e) {
        // Someone appended between our read and our fence: the old owner finishing a checkpoint
        // (retry on the new tail) or a newer owner (the epoch check above refuses next time).
        if (!(e instanceof FencedError) || attempt === fenceAttempts) throw e;
      }
    }
  }

  /** The sequence of the last checkpoint on the log as this writer knows it (0: none). */
  get checkpointId(): number {
    return this.checkpoint;
  }

  /** Body bytes on the log since its last snapshot: the caller compacts when this grows large. */
  get bytesSinceSnapshot(): number {
    return this.sinceSnapshot;
  }

  /**
   * Appends one checkpoint: its changes in chunks of about 512 KiB, the last of them the commit
   * record carrying `meta`. It counts only once the commit record is on the log.
   */
  commit(changes: StateChanges): Promise<{ checkpointId: number }> {
    return this.serially(async () => {
      const packer = new ChunkPacker(4 + changes.meta.length);
      // Checked before writing, so an oversized entry does not leave a partial checkpoint behind.
      for (const [key, value] of changes.puts) packer.check(key, value);
      let first: number | undefined;
      const append = async (chunk: Uint8Array | undefined) => {
        if (!chunk) return;
        const seq = await this.append("chunk", chunk);
        first ??= seq;
      };
      for (const [key, value] of changes.puts) await append(packer.add(key, value));
      for (const key of changes.deletes) await append(packer.add(key, null));
      const seq = await this.append("commit", commitBody(changes.meta, packer.take()), first);
      this.checkpoint = seq;
      return { checkpointId: seq };
    });
  }

  /**
   * Writes the whole state as a snapshot, then purges the shard's records before it: restore
   * starts from the snapshot. The purge is not fenced, and need not be: it only removes records
   * that a committed snapshot already supersedes, whoever's they were.
   */
  compact(entries: AsyncIterable<[string, Uint8Array]> | Iterable<[string, Uint8Array]>, meta: Uint8Array): Promise<{ checkpointId: number; purged: number }> {
    return this.serially(async () => {
      const packer = new ChunkPacker(4 + meta.length);
      let first: number | undefined;
      for await (const [key, value] of entries) {
        const chunk = packer.add(key, value);
        if (!chunk) continue;
        const chunkSeq = await this.append("snapshot-chunk", chunk);
        first ??= chunkSeq;
      }
      const seq = await this.append("snapshot-commit", commitBody(meta, packer.take()), first);
      this.checkpoint = seq;
      const { purged } = await this.jsm.streams.purge(streams.shardState, { filter: this.subject, seq: first ?? seq });
      return { checkpointId: seq, purged };
    });
  }

  /** Operations run one at a time: each record must chain to the one before it. */
  private serially<T>(operation: () => Promise<T>): Promise<T> {
    const run = this.queue.then(operation, operation);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async append(kind: RecordKind, body: Uint8Array, first?: number): Promise<number> {
    if (this.failure) throw this.failure;
    if (body.length > maxRecordBytes) throw new RangeError(`shard state record of ${body.length} bytes`);
    const sinceSnapshot = kind === "snapshot-commit" ? 0 : this.sinceSnapshot + body.length;
    const h = headers();
    h.set(header.kind, kind);
    h.set(header.epoch, String(this.epoch));
    if (isCommit(kind)) {
      if (first !== undefined) h.set(header.first, String(first));
    } else {
      h.set(header.checkpoint, String(this.checkpoint));
    }
    h.set(header.sinceSnapshot, String(sinceSnapshot));
    try {
      const ack = await this.js.publish(this.subject, body, { headers: h, expect: { lastSubjectSequence: this.lastSequence } });
      this.lastSequence = ack.seq;
      this.sinceSnapshot = sinceSnapshot;
      return ack.seq;
    } catch (e) {
      if (!isWrongLastSequence(e)) throw (this.failure = e as Error);
      const tail = await readTail(this.jsm, this.shard).catch(() => undefined);
      // The log moved on at this writer's own epoch: a record of ours was stored although its
      // ack never came (a timeout under load). Not a newer owner: the shard reopens its log.
      if (tail?.epoch === this.epoch) {
        throw (this.failure = new Error(`shard ${this.shard}: the state log holds a record of epoch ${this.epoch} this writer never saw acked; reopen`));
      }
      throw (this.failure = new FencedError(this.shard, this.epoch, tail?.epoch));
    }
  }
}

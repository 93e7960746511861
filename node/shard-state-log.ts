import { RetentionPolicy, StorageType, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { decodeEntries, readRecordInfo, splitCommitBody } from "./shard-state-records.js";
import { readTail, ShardStateWriter } from "./shard-state-writer.js";
import { ensureStream, streams, subjects } from "./streams.js";

export { FencedError, ShardStateWriter, type StateChanges } from "./shard-state-writer.js";

export interface RestoredState {
  entries: Map<string, Uint8Array>;
  /** The last applied checkpoint's meta; undefined when there is none. */
  meta?: Uint8Array;
  /** Stream sequence of the last applied commit; 0 when there is none. */
  checkpointId: number;
  /** The last record read (whatever its kind); 0 when the log is empty. */
  lastSequence: number;
}

/** Restore holds at most this much of the log in flight. */
const restoreBufferBytes = 8 * 1024 * 1024;

/**
 * Each shard's actor state, replicated to JetStream so any node can take the shard over without
 * the previous owner's disk: a changelog of checkpoints (like a Kafka Streams changelog topic
 * with commit markers), compacted into snapshots, and fenced by ownership epoch.
 *
 * A new owner opens its writer first and restores after: the fence guarantees that everything
 * the previous owner will ever commit is already before it, so the restore misses nothing.
 *
 *   const writer = await log.open(shard, epoch);
 *   if ((await log.lastCheckpointId(shard)) !== localCheckpoint) state = await log.restore(shard);
 */
export class ShardStateLog {
  constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
  ) {}

  /** Creates TALLY_STATE, or updates it to these limits. No max_age: compaction bounds it, and age must never drop state. */
  static async ensureStream(jsm: JetStreamManager, replicas = 1): Promise<void> {
    await ensureStream(jsm, {
      name: streams.shardState,
      subjects: ["tally.state.>"],
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      num_replicas: replicas,
      max_age: 0,
    });
  }

  /** Fences the shard's log for `epoch`; rejects with FencedError if a newer epoch already has. */
  open(shard: number, epoch: number): Promise<ShardStateWriter> {
    return ShardStateWriter.fence(this.js, this.jsm, shard, epoch);
  }

  /**
   * The last committed checkpoint on the log, in one read: the tail record is either a commit
   * or carries the id of the last commit before it (Tally-Checkpoint), so nothing is scanned.
   */
  async lastCheckpointId(shard: number): Promise<number> {
    return (await readTail(this.jsm, shard))?.checkpointId ?? 0;
  }

  /** Body bytes on the shard's log since its last snapshot, as of its tail. */
  async bytesSinceSnapshot(shard: number): Promise<number> {
    return (await readTail(this.jsm, shard))?.sinceSnapshot ?? 0;
  }

  /**
   * Replays the shard's log up to its current tail. Committed checkpoints apply in order, a
   * snapshot commit replaces everything before it, and chunks count only with their commit: a
   * commit names its first chunk (Tally-First), so chunks of a checkpoint that never committed
   * (a crash, a fence, a failed snapshot) are ignored.
   */
  async restore(shard: number): Promise<RestoredState> {
    const tail = await readTail(this.jsm, shard);
    const restored: RestoredState = { entries: new Map(), checkpointId: 0, lastSequence: 0 };
    if (!tail) return restored;
    let pending: { seq: number; kind: string; body: Uint8Array }[] = [];
    const consumer = await this.js.consumers.get(streams.shardState, { filter_subjects: subjects.shardState(shard) });
    const messages = await consumer.consume({ max_bytes: restoreBufferBytes });
    try {
      for await (const m of messages) {
        const record = readRecordInfo(m.seq, m.headers);
        if (record.kind === "fence") {
          pending = [];
        } else if (record.kind === "chunk" || record.kind === "snapshot-chunk") {
          pending.push({ seq: m.seq, kind: record.kind, body: m.data });
        } else {
          const chunkKind = record.kind === "commit" ? "chunk" : "snapshot-chunk";
          const chunks = record.first === undefined ? [] : pending.filter((p) => p.seq >= record.first!);
          if (record.first !== undefined && (chunks[0]?.seq !== record.first || chunks.some((c) => c.kind !== chunkKind))) {
            throw new Error(`shard ${shard} state log: ${record.kind} ${m.seq} names first chunk ${record.first}, which is not on the log`);
          }
          if (record.kind === "snapshot-commit") restored.entries = new Map();
          const { meta, entries } = splitCommitBody(m.data);
          for (const body of [...chunks.map((c) => c.body), entries]) {
            for (const [key, value] of decodeEntries(body)) {
              if (value === null) restored.entries.delete(key);
              else restored.entries.set(key, value);
            }
          }
          restored.meta = meta;
          restored.checkpointId = m.seq;
          pending = [];
        }
        restored.lastSequence = m.seq;
        if (m.seq >= tail.seq) break;
      }
    } finally {
      messages.stop();
      await consumer.delete().catch(() => undefined);
    }
    return restored;
  }
}

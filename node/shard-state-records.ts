import type { MsgHdrs } from "@nats-io/transport-node";

/**
 * The record format of a shard's state log (`tally.state.<shard>` in TALLY_STATE).
 *
 * Headers (every record):
 *   Tally-Record          fence | chunk | commit | snapshot-chunk | snapshot-commit
 *   Tally-Epoch           the writer's ownership epoch
 *   Tally-Checkpoint      (not on commits, whose id is their own sequence) the sequence of the
 *                         last commit before this record, 0 if none: the log's tail alone says
 *                         which checkpoint the log holds, even when it ends in a fence or chunks
 *   Tally-Since-Snapshot  body bytes written since the last snapshot commit, this record
 *                         included (0 on a snapshot commit): the tail says when to compact
 *   Tally-First           (commits only, when they have chunks) the sequence of the
 *                         checkpoint's first chunk
 *
 * Bodies are binary, since state can be megabytes a second:
 *   fence                            empty
 *   chunk, snapshot-chunk            entries
 *   commit, snapshot-commit          [u32 meta length][meta][entries]
 *   entries = repeated [u32 key length][utf8 key][i32 value length, -1 = delete][value]
 * All integers big-endian.
 */
export type RecordKind = "fence" | "chunk" | "commit" | "snapshot-chunk" | "snapshot-commit";

export const header = {
  kind: "Tally-Record",
  epoch: "Tally-Epoch",
  checkpoint: "Tally-Checkpoint",
  sinceSnapshot: "Tally-Since-Snapshot",
  first: "Tally-First",
} as const;

/** Body size a chunk is filled to; NATS' default max_payload (1 MiB) leaves room for headers. */
export const chunkTargetBytes = 512 * 1024;
/** The largest body one record may have: one entry may exceed the target, alone in its chunk. */
export const maxRecordBytes = 1024 * 1024 - 16 * 1024;

export interface RecordInfo {
  kind: RecordKind;
  epoch: number;
  /** For a commit, the commit's own sequence; otherwise the last commit before it (0: none). */
  checkpointId: number;
  sinceSnapshot: number;
  first?: number;
}

const kinds = new Set<string>(["fence", "chunk", "commit", "snapshot-chunk", "snapshot-commit"]);

export function isCommit(kind: RecordKind): boolean {
  return kind === "commit" || kind === "snapshot-commit";
}

export function readRecordInfo(seq: number, headers: MsgHdrs | undefined): RecordInfo {
  const kind = headers?.get(header.kind) ?? "";
  if (!kinds.has(kind)) throw new Error(`shard state log: message ${seq} is not a state record (Tally-Record: "${kind}")`);
  const number = (name: string) => {
    const text = headers!.get(name);
    return text === "" ? undefined : Number(text);
  };
  const first = number(header.first);
  return {
    kind: kind as RecordKind,
    epoch: number(header.epoch) ?? 0,
    checkpointId: isCommit(kind as RecordKind) ? seq : (number(header.checkpoint) ?? 0),
    sinceSnapshot: number(header.sinceSnapshot) ?? 0,
    ...(first === undefined ? {} : { first }),
  };
}

/**
 * Packs entries into chunk bodies of about `chunkTargetBytes`, after `reserved` leading bytes.
 * An entry is written once, into its chunk's one buffer, when the chunk is taken: a checkpoint
 * after a minute's close carries a million final windows, and three small buffers per entry
 * (its lengths and its key) then a concat was most of packing them.
 */
export class ChunkPacker {
  private keys: string[] = [];
  private keyLengths: number[] = [];
  private values: (Uint8Array | null)[] = [];
  private size = 0;

  constructor(private readonly reserved = 0) {}

  /** Throws a RangeError if the entry cannot fit any record. */
  check(key: string, value: Uint8Array | null): void {
    // (A UTF-16 code unit is at most 3 bytes of UTF-8: most keys need no count.)
    if (this.reserved + 8 + 3 * key.length + (value?.length ?? 0) <= maxRecordBytes) return;
    this.entrySize(Buffer.byteLength(key, "utf8"), key, value);
  }

  /** Adds an entry; returns the chunk it closed to make room, if any. */
  add(key: string, value: Uint8Array | null): Uint8Array | undefined {
    const keyLength = Buffer.byteLength(key, "utf8");
    const size = this.entrySize(keyLength, key, value);
    const full = this.size > 0 && this.reserved + this.size + size > chunkTargetBytes ? this.take() : undefined;
    this.keys.push(key);
    this.keyLengths.push(keyLength);
    this.values.push(value);
    this.size += size;
    return full;
  }

  /** The entries added since the last chunk closed (possibly none). */
  take(): Uint8Array {
    const body = Buffer.allocUnsafe(this.size);
    let at = 0;
    for (let i = 0; i < this.keys.length; i++) {
      const keyLength = this.keyLengths[i]!;
      const value = this.values[i]!;
      body.writeUInt32BE(keyLength, at);
      body.write(this.keys[i]!, at + 4, keyLength, "utf8");
      at += 4 + keyLength;
      body.writeInt32BE(value === null ? -1 : value.length, at);
      at += 4;
      if (value && value.length > 0) {
        body.set(value, at);
        at += value.length;
      }
    }
    this.keys = [];
    this.keyLengths = [];
    this.values = [];
    this.size = 0;
    return body;
  }

  private entrySize(keyLength: number, key: string, value: Uint8Array | null): number {
    const size = 8 + keyLength + (value?.length ?? 0);
    if (this.reserved + size > maxRecordBytes) throw new RangeError(`shard state entry "${key}" is ${size} bytes; at most ${maxRecordBytes - this.reserved} fit a record`);
    return size;
  }
}

export function commitBody(meta: Uint8Array, entries: Uint8Array): Uint8Array {
  const body = Buffer.allocUnsafe(4 + meta.length + entries.length);
  body.writeUInt32BE(meta.length, 0);
  body.set(meta, 4);
  body.set(entries, 4 + meta.length);
  return body;
}

export function splitCommitBody(body: Uint8Array): { meta: Uint8Array; entries: Uint8Array } {
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const metaLength = view.getUint32(0);
  return { meta: body.slice(4, 4 + metaLength), entries: body.subarray(4 + metaLength) };
}

/** The entries of a chunk body, in order; null values are deletes. Values are copies. */
export function* decodeEntries(body: Uint8Array): Generator<[string, Uint8Array | null]> {
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const text = new TextDecoder();
  let at = 0;
  while (at < body.length) {
    const keyLength = view.getUint32(at);
    const key = text.decode(body.subarray(at + 4, at + 4 + keyLength));
    at += 4 + keyLength;
    const valueLength = view.getInt32(at);
    at += 4;
    if (valueLength < 0) {
      yield [key, null];
    } else {
      if (at + valueLength > body.length) throw new Error("shard state log: truncated entry");
      yield [key, body.slice(at, at + valueLength)];
      at += valueLength;
    }
  }
}

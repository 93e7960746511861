import RocksDB from "rocksdb-native";

/**
 * Durable key/value state for actors and anything else a node keeps on its own disk.
 * `write` is atomic: all puts and deletes land together or not at all, which is what lets a
 * checkpoint store actor snapshots and the stream position they reflect as one fact.
 */
export interface StateStore {
  get(key: string): Promise<Uint8Array | undefined>;
  /** `get` for many keys at once (one native round trip on RocksDB), in order. */
  getMany(keys: readonly string[]): Promise<(Uint8Array | undefined)[]>;
  write(puts: Iterable<[string, Uint8Array]>, deletes?: Iterable<string>): Promise<void>;
  /** Entries with gte <= key < lt, in key order. */
  scan(gte: string, lt: string): AsyncIterable<[string, Uint8Array]>;
  /** Deletes every key with gte <= key < lt. */
  deleteRange(gte: string, lt: string): Promise<void>;
  close(): Promise<void>;
}

/**
 * RocksDB's memtable size (its default: 64 MiB, two of them). Checkpoints rewrite every changed
 * window each second, so the memtables fill and flush either way; smaller ones leave ~100 MiB of a
 * node's RSS to its windows (README, "Memory per active window").
 */
const memtableBytes = 16 * 2 ** 20;

/** A StateStore on the node's embedded RocksDB. */
export class RocksStateStore implements StateStore {
  private readonly db: RocksDB;

  private constructor(db: RocksDB) {
    this.db = db;
  }

  static async open(dir: string): Promise<RocksStateStore> {
    const db = new RocksDB(dir, { writeBufferSize: memtableBytes });
    await db.ready();
    return new RocksStateStore(db);
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    const value = await this.db.get(key);
    return value ?? undefined;
  }

  async getMany(keys: readonly string[]): Promise<(Uint8Array | undefined)[]> {
    if (keys.length === 0) return [];
    const batch = this.db.read({ capacity: keys.length });
    const values = keys.map((key) => batch.get(key));
    await batch.flush();
    batch.destroy();
    return (await Promise.all(values)).map((value) => value ?? undefined);
  }

  async write(puts: Iterable<[string, Uint8Array]>, deletes: Iterable<string> = []): Promise<void> {
    const batch = this.db.write();
    // (Most values are Buffers already: no second view of each.)
    for (const [key, value] of puts) batch.put(key, Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength));
    for (const key of deletes) batch.delete(key);
    await batch.flush();
    batch.destroy();
  }

  async *scan(gte: string, lt: string): AsyncIterable<[string, Uint8Array]> {
    for await (const entry of this.db.iterator({ gte, lt })) {
      yield [entry.key.toString(), entry.value];
    }
  }

  async deleteRange(gte: string, lt: string): Promise<void> {
    const batch = this.db.write();
    batch.deleteRange(gte, lt);
    await batch.flush();
    batch.destroy();
  }

  /** Native memory RocksDB reports holding (bytes), for the node's `/v1/status`. */
  async memory(): Promise<RocksMemory | undefined> {
    const read = async (name: string) => Number((await this.db.getProperty(name)) ?? 0);
    try {
    return {
      memtables: await read("rocksdb.size-all-mem-tables"),
      blockCache: await read("rocksdb.block-cache-usage"),
      blockCachePinned: await read("rocksdb.block-cache-pinned-usage"),
      tableReaders: await read("rocksdb.estimate-table-readers-mem"),
      };
    } catch {
      return undefined; // closed (a node stopping): nothing to report
    }
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}

/**
 * What RocksDB's own accounting says it holds: memtables (active, immutable and pinned), the
 * block cache (data, index and filter blocks: index and filters live there too, pinned), and
 * table readers' memory outside the cache.
 */
export interface RocksMemory {
  memtables: number;
  blockCache: number;
  blockCachePinned: number;
  tableReaders: number;
}

/** A StateStore that keeps everything in memory: for unit tests of actors, never for nodes. */
export class MemoryStateStore implements StateStore {
  private readonly map = new Map<string, Uint8Array>();

  async get(key: string) {
    return this.map.get(key);
  }

  async getMany(keys: readonly string[]) {
    return keys.map((key) => this.map.get(key));
  }

  async write(puts: Iterable<[string, Uint8Array]>, deletes: Iterable<string> = []) {
    for (const [k, v] of puts) this.map.set(k, v);
    for (const k of deletes) this.map.delete(k);
  }

  async *scan(gte: string, lt: string): AsyncIterable<[string, Uint8Array]> {
    const keys = [...this.map.keys()].filter((k) => k >= gte && k < lt).sort();
    for (const k of keys) yield [k, this.map.get(k)!];
  }

  async deleteRange(gte: string, lt: string) {
    for (const k of [...this.map.keys()]) if (k >= gte && k < lt) this.map.delete(k);
  }

  async close() {}
}

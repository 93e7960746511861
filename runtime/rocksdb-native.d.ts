// rocksdb-native ships no type declarations; this covers the part Tally uses.
declare module "rocksdb-native" {
  type Key = string | Buffer;
  interface WriteBatch {
    put(key: Key, value: Key): void;
    delete(key: Key): void;
    deleteRange(start: Key, end: Key): void;
    flush(): Promise<void>;
    destroy(): void;
  }
  interface ReadBatch {
    get(key: Key): Promise<Buffer | null>;
    flush(): Promise<void>;
    destroy(): void;
  }
  interface Entry {
    key: Buffer;
    value: Buffer;
  }
  export default class RocksDB {
    constructor(path: string, opts?: Record<string, unknown>);
    ready(): Promise<void>;
    close(opts?: { force?: boolean }): Promise<void>;
    get(key: Key): Promise<Buffer | null>;
    write(opts?: Record<string, unknown>): WriteBatch;
    read(opts?: Record<string, unknown>): ReadBatch;
    iterator(range: { gte?: Key; lt?: Key; gt?: Key; lte?: Key; reverse?: boolean; limit?: number }): AsyncIterable<Entry>;
    /** A RocksDB property (`rocksdb.…`), e.g. "rocksdb.block-cache-usage"; numbers come as strings or numbers. */
    getProperty(name: string): Promise<string | number | null>;
  }
}

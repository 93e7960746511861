// hashring ships no type declarations; this covers the part Tally uses.
declare module "hashring" {
  /** A server id, or server ids mapped to per-server options (`vnodes`: exact number of virtual nodes). */
  type Servers = string | string[] | Record<string, { vnodes?: number; weight?: number }>;
  interface HashRingOptions {
    "vnode count"?: number;
    replicas?: number;
    "max cache size"?: number;
    compatibility?: "ketama" | "hash_ring";
  }
  export default class HashRing {
    constructor(servers?: Servers, algorithm?: string | ((key: string) => Buffer), options?: HashRingOptions);
    /** The server owning `key`, or undefined when the ring is empty. */
    get(key: string): string | undefined;
    add(servers: Servers): this;
    remove(server: string): this;
    has(server: string): boolean;
    range(key: string, size?: number, unique?: boolean): string[];
  }
}

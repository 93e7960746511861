import { JetStreamApiCodes, JetStreamApiError, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { Kvm, type KV, type KvEntry } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { listEntries } from "./kv-list.js";

export const ownersBucket = "TALLY_OWNERS";

/** What the bucket stores per unit. The epoch is not stored: see `Ownership.epoch`. */
interface StoredOwnership {
  node: string | null;
  /** When it was written (ms), for humans. */
  at: number;
}

export interface Ownership {
  /** The owning node; null when released. */
  node: string | null;
  /**
   * The fencing token: the KV revision of the write that set this entry. Revisions are the
   * bucket stream's sequence numbers, so every later claim has a higher epoch. Nothing stores
   * it in the value because the revision is known only after the write; it always equals
   * `revision`, kept as a separate name because callers use the two for different jobs.
   */
  epoch: number;
  /** What a claim or release must expect (compare-and-set). */
  revision: number;
  at: number;
}

function isWrongLastSequence(e: unknown): boolean {
  return (
    e instanceof JetStreamApiError &&
    (e.code === JetStreamApiCodes.StreamWrongLastSequence || e.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}

function decode(entry: KvEntry | null): Ownership | undefined {
  if (!entry || entry.operation !== "PUT") return undefined;
  const { node, at } = entry.json<StoredOwnership>();
  return { node, at, epoch: entry.revision, revision: entry.revision };
}

/**
 * Who owns each unit (`shard.7`, `partition.3`), in a NATS KV bucket written only by
 * compare-and-set, so two nodes racing for a unit cannot both win, and each ownership carries an
 * epoch that a newer one always exceeds.
 */
export class OwnershipTable {
  private constructor(
    private readonly kv: KV,
    private readonly jsm: JetStreamManager,
  ) {}

  static async open(nc: NatsConnection, opts: { replicas?: number } = {}): Promise<OwnershipTable> {
    return new OwnershipTable(await new Kvm(nc).create(ownersBucket, { history: 1, replicas: opts.replicas ?? 1 }), await jetstreamManager(nc));
  }

  async get(unit: string): Promise<Ownership | undefined> {
    return decode(await this.kv.get(unit));
  }

  async all(): Promise<Map<string, Ownership>> {
    const entries = await listEntries(this.jsm, this.kv, ownersBucket);
    return new Map(entries.map((e) => [e.key, decode(e)!]));
  }

  /**
   * Takes `unit` for `node` if its entry is still at `expectedRevision` (0: no entry yet).
   * Returns the new epoch, or undefined when someone else wrote the entry first.
   */
  async claim(unit: string, node: string, expectedRevision: number): Promise<number | undefined> {
    return this.write(unit, { node, at: Date.now() }, expectedRevision);
  }

  /** Marks `unit` unowned, only if `node` still owns it at `epoch`. Returns whether it did. */
  async release(unit: string, node: string, epoch: number): Promise<boolean> {
    const current = await this.get(unit);
    if (current?.node !== node || current.epoch !== epoch) return false;
    return (await this.write(unit, { node: null, at: Date.now() }, epoch)) !== undefined;
  }

  private async write(unit: string, value: StoredOwnership, expectedRevision: number): Promise<number | undefined> {
    try {
      const body = JSON.stringify(value);
      return expectedRevision === 0 ? await this.kv.create(unit, body) : await this.kv.update(unit, body, expectedRevision);
    } catch (e) {
      if (isWrongLastSequence(e)) return undefined;
      throw e;
    }
  }
}

import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { parseRule, type MetricRule } from "../actors/rules.js";
import { listEntries } from "../cluster/kv-list.js";
import { watchBucket } from "./kv-watch.js";

export const rulesBucket = "TALLY_RULES";

/**
 * A new rule counts events that arrive from this long after it is stored: time enough for every
 * node to see it before such an event can be routed, so no event is half-counted.
 */
export const activationDelayMs = 2_000;

/** A rule as stored: its definition as written, and from when it counts events (README, "Live rules"). */
export interface StoredRule {
  definition: Record<string, unknown>;
  /** Events that arrived (JetStream stored time) at or after this moment count; 0 = from the start. */
  activeFrom: number;
}

/**
 * Metric rules live in a NATS KV bucket (key = metric name), so every node sees a change within
 * moments and applies it without a restart. A rules file only seeds the rules it does not have.
 */
export class RulesStore {
  private constructor(
    private readonly kv: KV,
    private readonly jsm: JetStreamManager,
  ) {}

  static async open(nc: NatsConnection, replicas = 1): Promise<RulesStore> {
    return new RulesStore(await new Kvm(nc).create(rulesBucket, { history: 5, replicas }), await jetstreamManager(nc));
  }

  /** Stores each rule that is not defined yet, active from the start. Returns the names it added. */
  async seed(definitions: Record<string, unknown>[]): Promise<string[]> {
    const added: string[] = [];
    for (const definition of definitions) {
      const rule = parseRule(definition);
      try {
        await this.kv.create(rule.name, JSON.stringify({ definition, activeFrom: 0 } satisfies StoredRule));
        added.push(rule.name);
      } catch (e) {
        if (!/exists|wrong last sequence/i.test((e as Error).message)) throw e;
      }
    }
    return added;
  }

  /** Creates or replaces a rule. A rule that exists keeps its activation time. */
  async put(definition: Record<string, unknown>, activeFrom: number): Promise<StoredRule> {
    const rule = parseRule(definition);
    const existing = await this.get(rule.name);
    const stored: StoredRule = { definition, activeFrom: existing ? existing.activeFrom : activeFrom };
    await this.kv.put(rule.name, JSON.stringify(stored));
    return stored;
  }

  async get(name: string): Promise<StoredRule | undefined> {
    const entry = await this.kv.get(name);
    if (!entry || entry.operation !== "PUT") return undefined;
    return entry.json<StoredRule>();
  }

  async remove(name: string): Promise<boolean> {
    if (!(await this.get(name))) return false;
    await this.kv.delete(name);
    return true;
  }

  async list(): Promise<StoredRule[]> {
    const out = (await listEntries(this.jsm, this.kv, rulesBucket)).map((e) => e.json<StoredRule>());
    return out.sort((a, b) => String(a.definition.name).localeCompare(String(b.definition.name)));
  }

  /**
   * Calls `onChange` with the whole current rule set: once with what is stored, then after every
   * change. A stored definition that no longer parses is reported and skipped, never fatal.
   */
  async watch(onChange: (rules: MetricRule[]) => void, onBadRule: (name: string, error: Error) => void): Promise<() => void> {
    return watchBucket(
      this.kv,
      () => listEntries(this.jsm, this.kv, rulesBucket),
      (entry) => {
        try {
          const stored = entry.json<StoredRule>();
          return parseRule(stored.definition, 0, stored.activeFrom);
        } catch (e) {
          onBadRule(entry.key, e as Error);
          return undefined;
        }
      },
      onChange,
    );
  }
}

import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { connect } from "@nats-io/transport-node";
import { parseDuration } from "../actors/durations.js";
import { parseRule, parseRuleDefinitions } from "../actors/rules.js";
import { backfill } from "../node/backfill.js";
import { activationDelayMs, RulesStore } from "../node/rules-store.js";
import { nodeDefaults } from "../node/tally-node.js";
import { UsageError } from "./args.js";

const usage = `tally rules apply FILE --nats URL [--backfill 6h]
tally rules ls --nats URL
tally rules rm NAME --nats URL
  apply creates or replaces the file's rules in the cluster's rules bucket; every node applies
  them within seconds. A new rule counts events that arrive from ~2 s after it is stored; with
  --backfill it also counts the events of that much time before, still retained in JetStream.`;

/** `tally rules apply|ls|rm`: the live rule set, in the NATS KV bucket every node watches. */
export async function rules(args: string[]): Promise<void> {
  const [action, ...rest] = args;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: { nats: { type: "string" }, backfill: { type: "string" } },
  });
  if (!values.nats) throw new UsageError(`--nats URL is required\n${usage}`);
  const nc = await connect({ servers: values.nats.split(","), name: "tally-rules" });
  try {
    const store = await RulesStore.open(nc);
    if (action === "ls") {
      for (const stored of await store.list()) {
        const from = stored.activeFrom ? new Date(stored.activeFrom).toISOString() : "the start";
        console.log(`${JSON.stringify(stored.definition)}\tactive from ${from}`);
      }
    } else if (action === "rm" && positionals.length === 1) {
      if (!(await store.remove(positionals[0]!))) throw new UsageError(`no rule "${positionals[0]}"`);
      console.log(`removed ${positionals[0]}`);
    } else if (action === "apply" && positionals.length === 1) {
      await apply(nc, store, positionals[0]!, values.backfill);
    } else throw new UsageError(usage);
  } finally {
    await nc.close();
  }
}

async function apply(nc: Awaited<ReturnType<typeof connect>>, store: RulesStore, file: string, backfillFor: string | undefined) {
  let definitions: Record<string, unknown>[];
  let backfillMs: number | undefined;
  try {
    definitions = parseRuleDefinitions(readFileSync(file, "utf8"));
    backfillMs = backfillFor === undefined ? undefined : parseDuration(backfillFor);
  } catch (e) {
    throw new UsageError(`${file}: ${(e as Error).message}`);
  }
  const added = [];
  for (const definition of definitions) {
    const name = String(definition.name);
    const existed = (await store.get(name)) !== undefined;
    const stored = await store.put(definition, Date.now() + activationDelayMs);
    console.log(`${existed ? "updated" : "added"} ${name}: counts events arriving from ${stored.activeFrom ? new Date(stored.activeFrom).toISOString() : "the start"}`);
    if (!existed) added.push(parseRule(stored.definition, 0, stored.activeFrom));
  }
  // Return once the new rules are live, so what the caller publishes next is counted.
  const live = Math.max(0, ...added.map((r) => r.activeFrom));
  if (live > Date.now()) await new Promise((r) => setTimeout(r, live - Date.now() + 50));
  if (backfillMs === undefined) return;
  for (const rule of added) {
    const fromMs = rule.activeFrom - backfillMs;
    console.log(`backfilling ${rule.name} from ${new Date(fromMs).toISOString()}…`);
    const events = await backfill(nc, {
      rule,
      fromMs,
      partitions: nodeDefaults.partitions,
      shards: nodeDefaults.shards,
      dedupHorizonMs: nodeDefaults.dedupHorizonMs,
    });
    console.log(`backfilled ${rule.name}: ${events} events`);
  }
  if (definitions.length > added.length) console.log("rules that already existed are not backfilled (they already count their events)");
}

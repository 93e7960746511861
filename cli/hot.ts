import { parseArgs } from "node:util";
import { connect } from "@nats-io/transport-node";
import { hotKeyDelayMs, HotKeysStore } from "../node/hot-keys-store.js";
import { nodeDefaults } from "../node/tally-node.js";
import { UsageError } from "./args.js";

const usage = `tally hot ls --nats URL
tally hot set METRIC [DIMS] [--salts N] --nats URL
tally hot unset METRIC [DIMS] --nats URL
  DIMS: the series' dimension values as a JSON array in the rule's groupBy order (default [], a
  metric without groupBy). set salts the series by hand (README, "Hot keys") for events arriving
  from ~2 s later; unset ends it the same way. Series salted for their rate come and go by themselves.`;

/** `tally hot ls|set|unset`: the salted series, in the NATS KV bucket every router watches. */
export async function hot(args: string[]): Promise<void> {
  const [action, ...rest] = args;
  const { values, positionals } = parseArgs({ args: rest, allowPositionals: true, options: { nats: { type: "string" }, salts: { type: "string" } } });
  if (!values.nats) throw new UsageError(`--nats URL is required\n${usage}`);
  const [metric, dims = "[]"] = positionals;
  if (action !== "ls" && (!metric || !isJsonArray(dims))) throw new UsageError(usage);
  const salts = Number(values.salts ?? nodeDefaults.hotSalts);
  if (!Number.isInteger(salts) || salts < 2) throw new UsageError(`--salts: expected a whole number ≥ 2, got "${values.salts}"`);
  const nc = await connect({ servers: values.nats.split(","), name: "tally-hot" });
  try {
    const store = await HotKeysStore.open(nc);
    const now = Date.now();
    if (action === "ls") {
      for (const h of await store.list()) {
        const until = h.until === undefined ? "" : ` until ${new Date(h.until).toISOString()}`;
        console.log(`${h.metric} ${h.dimsId}\t${h.salts} sub-actors from ${new Date(h.from).toISOString()}${until} (${h.reason})`);
      }
    } else if (action === "set") {
      await store.put({ metric: metric!, dimsId: JSON.stringify(JSON.parse(dims)), salts, from: now + hotKeyDelayMs, reason: "configured" });
      console.log(`salting ${metric} ${dims} over ${salts} sub-actors from ${new Date(now + hotKeyDelayMs).toISOString()}`);
    } else if (action === "unset") {
      const existing = await store.get(metric!, JSON.stringify(JSON.parse(dims)));
      if (!existing) throw new UsageError(`${metric} ${dims} is not salted`);
      await store.put({ ...existing, until: now + hotKeyDelayMs });
      console.log(`unsalting ${metric} ${dims} from ${new Date(now + hotKeyDelayMs).toISOString()}`);
    } else throw new UsageError(usage);
  } finally {
    await nc.close();
  }
}

function isJsonArray(text: string): boolean {
  try {
    return Array.isArray(JSON.parse(text));
  } catch {
    return false;
  }
}

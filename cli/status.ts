import { parseArgs } from "node:util";
import { connect } from "@nats-io/transport-node";
import { Membership } from "../cluster/membership.js";
import { HotKeysStore } from "../node/hot-keys-store.js";
import { UsageError } from "./args.js";

/** `tally status --nats URL [--json]`: the cluster's nodes, what each owns, its lag and watermark. */
export async function status(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { nats: { type: "string" }, json: { type: "boolean" } } });
  if (!values.nats) throw new UsageError("--nats URL is required");
  const nc = await connect({ servers: values.nats.split(","), name: "tally-status" });
  try {
    const members = await (await Membership.open(nc)).members();
    const hot = await (await HotKeysStore.open(nc)).list();
    if (values.json) {
      console.log(JSON.stringify({ nodes: members, hotKeys: hot }, null, 2));
      return;
    }
    if (members.length === 0) console.log("no live nodes");
    const now = Date.now();
    for (const m of members) {
      const lag = Object.values(m.lag.partitions).reduce((a, b) => a + b, 0);
      const watermark = m.watermark === null ? "none yet" : `${new Date(m.watermark).toISOString()} (${((now - m.watermark) / 1000).toFixed(1)} s behind)`;
      console.log(`node ${m.id}${m.leaving ? " (leaving)" : ""}  ${m.http ?? ""}  up ${Math.round((now - m.startedAt) / 1000)} s  heartbeat ${now - m.heartbeatAt} ms ago`);
      console.log(`  partitions ${m.partitions.length} (${compact(m.partitions)})  event lag ${lag}`);
      console.log(`  shards ${m.shards.length} (${compact(m.shards)})  mailbox lag ${m.lag.mailbox}`);
      console.log(`  watermark ${watermark}`);
      const behind = Object.entries(m.lag.partitions).filter(([, n]) => n > 0);
      if (behind.length > 0) console.log(`  lagging partitions: ${behind.map(([p, n]) => `${p}:${n}`).join(" ")}`);
      const shardsBehind = Object.entries(m.lag.shards ?? {}).filter(([, n]) => n > 0);
      if (shardsBehind.length > 0) console.log(`  lagging shards: ${shardsBehind.map(([s, n]) => `${s}:${n}`).join(" ")}`);
      const folded = Object.entries(m.folded ?? {});
      if (folded.length > 0) console.log(`  folded into __other__ (maxSeries): ${folded.map(([metric, n]) => `${metric}:${n}`).join(" ")}`);
    }
    for (const h of hot) {
      const state = h.until !== undefined && h.until <= now ? `cooled ${new Date(h.until).toISOString()}` : now < h.from ? `salting from ${new Date(h.from).toISOString()}` : `salted since ${new Date(h.from).toISOString()}`;
      console.log(`hot key ${h.metric} ${h.dimsId}: ${h.salts} sub-actors, ${state} (${h.reason}${h.rate !== undefined ? `, ${h.rate} events/s` : ""})`);
    }
  } finally {
    await nc.close();
  }
}

/** 0,1,2,3,7,8 → "0-3,7-8" */
function compact(ids: number[]): string {
  const sorted = [...ids].sort((a, b) => a - b);
  const ranges: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
    ranges.push(i === j ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return ranges.join(",");
}

// The router's in-process work per event, stage by stage, on the robots protobuf ×1000 workload
// (no NATS): decode, de-duplicate, route, encode the mailbox messages. Prints ns per event.
// Run: npx tsc -p tsconfig.json && node dist/bench/ingest-micro.js [batches] [--json] (JSON ×100 instead) [--rich] (count/avg/p99/distinct/top10)
import { decodePayloadInto } from "../actors/decode.js";
import { EventColumns } from "../actors/event-columns.js";
import { RecentIds } from "../actors/recent-ids.js";
import { Router } from "../actors/router.js";
import { parseRule } from "../actors/rules.js";
import { encodeMailbox } from "../node/mailbox-codec.js";
import { countAvg, jsonBatch, protoBatch, rich, robotsRule } from "./scenarios/robots.js";
import { buildMessages, fill } from "./workload.js";

const batches = Number(process.argv[2] ?? 2000) * (process.argv.includes("--json") ? 10 : 1);
const json = process.argv.includes("--json");
const workload = json ? jsonBatch(10_000) : protoBatch(10_000);
const messages = buildMessages(workload, "m");
const rule = parseRule(robotsRule(process.argv.includes("--rich") ? rich : countAvg, "5s"));
const router = new Router([rule], 32);
const limits = { maxPayloadBytes: 1 << 20, maxFutureMs: 3_600_000, maxTags: 64, maxValues: 64 };
const now = Date.now();
const payloads = Array.from({ length: batches }, (_, i) => fill(messages[i % messages.length]!.template, workload.encoding, i, now - 1000, 0, 0));

const spent = { decode: 0n, dedup: 0n, route: 0n, encode: 0n };
let events = 0;
const columns = new EventColumns();
const admitAll = () => true;
for (let round = 0; round < 2; round++) {
  const recent = new RecentIds(10 * 60_000, Date.now());
  if (round === 1) for (const k of Object.keys(spent) as (keyof typeof spent)[]) spent[k] = 0n;
  events = 0;
  for (const payload of payloads) {
    let t = process.hrtime.bigint();
    columns.reset(router.reads);
    decodePayloadInto(columns, columns.addMessage(payload, "r000000", "status"), now, !json, now, limits, { admit: admitAll });
    let u = process.hrtime.bigint();
    spent.decode += u - t;
    // The router drops duplicates as it decodes (`admit`); apart here to time them apart.
    let fresh = 0;
    if (process.argv.includes("--prefetch")) recent.prefetch(columns.fingerprint, 0, columns.length);
    for (let i = 0; i < columns.length; i++) if (!recent.seenFingerprint(columns.fingerprint, i, now)) fresh++;
    if (fresh !== columns.length) throw new Error("the workload has no duplicates");
    t = process.hrtime.bigint();
    spent.dedup += t - u;
    const routed = router.routeColumns(columns, -Infinity, 0);
    u = process.hrtime.bigint();
    spent.route += u - t;
    for (const [, partials] of routed.byShard) encodeMailbox({ type: "partials", partition: 0, first: 1, last: 2, partials });
    t = process.hrtime.bigint();
    spent.encode += t - u;
    events += columns.length;
  }
}
const total = Object.values(spent).reduce((a, b) => a + b, 0n);
for (const [k, v] of Object.entries(spent)) console.log(`${k.padEnd(7)} ${(Number(v) / events).toFixed(0).padStart(5)} ns/event`);
console.log(`total   ${(Number(total) / events).toFixed(0).padStart(5)} ns/event → ${Math.round((events * 1e9) / Number(total)).toLocaleString()} events/s on one core`);

// Diagnoses a node that falls behind: the high-cardinality case (a count per device over N devices)
// at a fixed open-loop rate, printing every 2 s what waits in each stage's consumers (events not
// yet routed, mailbox messages not yet applied, results not yet stored) and the node's RSS.
// Run: npx tsc -p tsconfig.json && node dist/bench/lag-at-rate.js [events/s] [seconds] [--devices N] [--profile DIR]
// (--profile: the node runs under `node --cpu-prof`, its top functions printed at the end)
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { nodeDefaults } from "../node/tally-node.js";
import { streams } from "../node/streams.js";
import { mayHoldFinals } from "../node/final-batches.js";
import { resultsOf } from "../node/provisional-batcher.js";
import { WebSocket } from "ws";
import type { WindowResult } from "../actors/window-result.js";
import { Generator, probeRule, rss, sleep, startTally } from "./harness.js";
import { summarizeProfile } from "./profile.js";
import { protoBatch } from "./scenarios/robots.js";

const { values, positionals } = parseArgs({ allowPositionals: true, options: { devices: { type: "string" }, profile: { type: "string" } } });
const rate = Number(positionals[0] ?? 15_000);
const seconds = Number(positionals[1] ?? 60);
const devices = Number(values.devices ?? 200_000);
const stack = await startTally(
  { metrics: [{ name: "devices", kind: "status", groupBy: ["device"], aggregates: ["count"], window: "1m", lateness: "5s" }, probeRule("5s")] },
  { profileDir: values.profile },
);
/** Messages not yet delivered, and delivered but not yet acked (a shard acks its mailbox at its checkpoints, after applying). */
const pending = async (stream: string, names: string[]) => {
  let n = 0;
  let unacked = 0;
  for (const name of names) {
    const info = await stack.jsm.consumers.info(stream, name).catch(() => undefined);
    n += info?.num_pending ?? 0;
    unacked += info?.num_ack_pending ?? 0;
  }
  return [n, unacked] as const;
};
const routers = Array.from({ length: nodeDefaults.partitions }, (_, p) => `router-${p}`);
const shards = (await stack.status()).shards.map((s) => `shard-${s.shard}`);
// Finals per window end: how many, and when the first and last were published after the window
// closed (event time is wall time here, and the rule's lateness is 5 s).
const finals = new Map<number, { n: number; first: number; last: number }>();
stack.nc.subscribe("results.devices.>", {
  callback: (_e, m) => {
    const text = m.string();
    if (!mayHoldFinals(text)) return; // a batch of provisional results
    const at = Date.now();
    // One final alone (as versions before batched finals published them) or a batch of them.
    for (const { end, status } of resultsOf(text)) {
      if (status !== "final") continue;
      const after = at - (end + 5_000);
      const f = finals.get(end) ?? { n: 0, first: after, last: after };
      f.n++;
      f.last = Math.max(f.last, after);
      finals.set(end, f);
    }
  },
});
// Freshness as the suite measures it: a probe event every 50 ms, timed from publish to the
// provisional result counting it on the WebSocket; per line, the probes answered since the last.
const probeSent = new Map<number, number[]>(); // window start → publish times, in order
const probeCounted = new Map<number, number>();
let probeLags: number[] = [];
const ws = new WebSocket(`ws://127.0.0.1:${stack.node.port}/v1/subscribe?metric=bench_probe`);
await new Promise((resolve, reject) => (ws.once("message", resolve), ws.once("error", reject)));
ws.on("message", (data) => {
  const { point } = JSON.parse(String(data)) as { point?: WindowResult };
  if (!point) return;
  const sent = probeSent.get(point.start) ?? [];
  for (let i = probeCounted.get(point.start) ?? 0; i < Math.min(point.eventCount, sent.length); i++) probeLags.push(Date.now() - sent[i]!);
  probeCounted.set(point.start, Math.max(probeCounted.get(point.start) ?? 0, point.eventCount));
});
let probeN = 0;
const probes = setInterval(() => {
  const now = Date.now();
  const start = Math.floor(now / 60_000) * 60_000;
  probeSent.set(start, [...(probeSent.get(start) ?? []), now]);
  stack.nc.publish("telemetry.probe.probe", JSON.stringify({ id: `probe-${probeN++}`, ts: now }));
}, 50);
const probeLine = () => {
  const lags = probeLags.sort((a, b) => a - b);
  probeLags = [];
  return lags.length === 0 ? "probes -" : `probes ${lags.length}: ${lags[Math.floor(lags.length / 2)]}/${lags[lags.length - 1]} ms`;
};
const generator = await Generator.start({ workload: { ...protoBatch(10_000), devices }, idPrefix: `l${Date.now()}`, target: { nats: stack.nats.url }, tsOffsetMs: 0, rate });
const started = Date.now();
const mib = (bytes: number) => Math.round(bytes / 2 ** 20);
try {
  while (Date.now() - started < seconds * 1000) {
    await sleep(2_000);
    const s = await stack.status();
    const [[events], [mailbox, unapplied]] = await Promise.all([pending(streams.events, routers), pending(streams.mailbox, shards)]);
    const t = Math.round((Date.now() - started) / 1000);
    // Event time is wall time here: how far the shards' watermark trails the newest events (2 s of it is the out-of-orderness).
    const behind = s.watermark === null ? "-" : `${((Date.now() - s.watermark) / 1000).toFixed(1)} s`;
    const closed = [...finals].map(([end, f]) => `${new Date(end).toISOString().slice(11, 19)}: ${f.n} finals ${f.first}–${f.last} ms after close`).join(", ");
    console.log(`${String(t).padStart(4)} s  routed ${s.counters.events}  events waiting ${events}  mailbox waiting ${mailbox} (${unapplied} unacked)  watermark ${behind} behind  ${probeLine()}  windows ${s.activeWindows}  rss ${Math.round(rss(stack.node.pid) / 2 ** 20)} MiB (heap ${mib(s.memory.heapUsed)}/${mib(s.memory.heapTotal)}, external ${mib(s.memory.external)})  ${closed}`);
  }
} finally {
  clearInterval(probes);
  ws.close();
  await generator.stop();
  await stack.stop();
}
const profile = values.profile && readdirSync(values.profile).find((f) => f.endsWith(".cpuprofile"));
if (profile) for (const e of summarizeProfile(join(values.profile!, profile), 25).top) console.log(`${String(e.selfPercent).padStart(5)}% ${String(e.selfMs).padStart(7)} ms  ${e.function}  ${e.location}`);
process.exit(0);

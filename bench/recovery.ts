// Recovery after `kill -9` at the simulator's default load (1,000 robots), one node, local NATS.
// Run: make build && node dist/bench/recovery.js [runSeconds=20] [checkpoint=1s]
// Prints: time from the kill to the restarted node being healthy, to its first result, and to
// having caught up (no pending events or mailbox messages).
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { defaultRulesFile } from "../cli/args.js";
import { runSimulator } from "../sim/publish.js";
import { streams } from "../node/streams.js";
import { nodeDefaults } from "../node/tally-node.js";
import { tempDir } from "../test/harness.js";
import { NatsProcess, NodeProcess } from "../test/processes.js";

const runSeconds = Number(process.argv[2] ?? 20);
const checkpoint = process.argv[3] ?? "1s";
const dir = tempDir("tally-recovery-");
const nats = await NatsProcess.start({ dir: join(dir.path, "nats") });
const node = await NodeProcess.start({
  natsUrl: nats.url,
  dataDir: join(dir.path, "node"),
  rulesFile: defaultRulesFile,
  extraArgs: ["--checkpoint-interval", checkpoint],
});
const nc = await connect({ servers: nats.url });
const jsm = await jetstreamManager(nc);
const sim = runSimulator({ nc, robots: 1000 });
await new Promise((r) => setTimeout(r, runSeconds * 1000));

let firstResultAt = 0;
const killedAt = Date.now();
await node.kill9();
const sub = nc.subscribe("results.>", {
  callback: () => {
    firstResultAt ||= Date.now();
  },
});
await node.restart();
const readyAt = Date.now();
firstResultAt = 0; // only results of the restarted process count
let caughtUpAt = 0;
while (!caughtUpAt) {
  let pending = 0;
  for (let s = 0; s < nodeDefaults.shards; s++) pending += (await jsm.consumers.info(streams.mailbox, `shard-${s}`).catch(() => undefined))?.num_pending ?? 0;
  for (let p = 0; p < nodeDefaults.partitions; p++) pending += (await jsm.consumers.info(streams.events, `router-${p}`).catch(() => undefined))?.num_pending ?? 0;
  if (pending === 0 && firstResultAt) caughtUpAt = Date.now();
  else await new Promise((r) => setTimeout(r, 20));
}
console.log(
  JSON.stringify({
    robots: 1000,
    checkpointInterval: checkpoint,
    eventsPublished: sim.published(),
    healthyMs: readyAt - killedAt,
    firstResultMs: firstResultAt - killedAt,
    caughtUpMs: caughtUpAt - killedAt,
  }),
);
sub.unsubscribe();
await sim.stop();
await nc.close();
await node.stop();
await nats.stop();
dir.remove();

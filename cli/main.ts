import { parseArgs } from "node:util";
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { connect } from "@nats-io/transport-node";
import { natsConfig, startNatsServer, type NatsServer } from "../node/nats-server.js";
import { nodeDefaults, type NodeOptions } from "../node/tally-node.js";
import { parseDuration } from "../actors/durations.js";
import { parseRetention } from "../node/retention.js";
import { runSimulator } from "../sim/publish.js";
import { loadPlugins, loadRules, parsePort, UsageError } from "./args.js";
import { dlq } from "./dlq.js";
import { rules } from "./rules.js";
import { status } from "./status.js";
import { runNode } from "./run-node.js";
import { hot } from "./hot.js";

const usage = `tally: real-time event-time aggregation on NATS

  tally up [--nats URL] [--http PORT] [--data DIR] [--rules FILE] [--no-sim] [--robots N]
      everything on one machine: a local nats-server (unless --nats), one node,
      the robot-fleet simulator (unless --no-sim) and the dashboard
  tally node --nats URL --data DIR [--http PORT] [--rules FILE]
      one node of a cluster
  tuning (up and node): --plugin FILE (an aggregation module, repeatable) --out-of-orderness 2s --idle-timeout 5s --dedup-horizon 10m
      --checkpoint-interval 1s --emit-interval 250ms --event-retention 7d
      --retention 1m=30d,1h=1y,1d=forever (aggregates kept, by window size)
  cluster (node): --replicas 1 (3 on a 3-server NATS cluster) --heartbeat-ttl 5s --rebalance-interval 1s --max-moves 4
      --hot-threshold 50000 (events/s into one series) --hot-salts 4 --hot-cool-after 1m
  tally simulate --nats URL [--robots N] [--interval MS] [--batch]
      the robot-fleet simulator
  tally status --nats URL [--json]
      the live nodes: what each owns, its event and mailbox lag, its watermark
  tally rules apply FILE [--backfill 6h] | ls | rm NAME  --nats URL
      the live rule set: every node applies a change within seconds
  tally hot ls | set METRIC [DIMS] [--salts N] | unset METRIC [DIMS]  --nats URL
      salt a series by hand (a key known to be hot), or end it; ls lists every salted series
  tally dlq ls|replay --nats URL [--reason R] [--from-seq N] [--limit N] [--json]
      inspect rejects, or re-publish them on their original subjects
  tally nats-config [--port N] [--store DIR]
      a nats-server config with the subject mapping Tally needs
`;

const commands: Record<string, (args: string[]) => Promise<void>> = { up, node, simulate, dlq, rules, hot, status, "nats-config": printNatsConfig };

async function main() {
  const [command, ...args] = process.argv.slice(2);
  const run = command ? commands[command] : undefined;
  if (!run) {
    process.stdout.write(usage);
    process.exitCode = command && command !== "help" && command !== "--help" ? 2 : 0;
    return;
  }
  try {
    await run(args);
  } catch (e) {
    if (e instanceof UsageError || (e as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
      console.error(`tally ${command}: ${(e as Error).message}`);
      process.exit(2);
    }
    throw e;
  }
}

async function up(args: string[]) {
  const { values } = parseArgs({
    args,
    options: {
      nats: { type: "string" },
      http: { type: "string" },
      data: { type: "string" },
      rules: { type: "string" },
      "no-sim": { type: "boolean" },
      robots: { type: "string" },
      ...tuningOptions,
    },
  });
  const dataDir = resolve(values.data ?? "data");
  await loadPlugins(values.plugin);
  const rules = loadRules(values.rules);
  const httpPort = parsePort(values.http, 8080, "http");
  mkdirSync(dataDir, { recursive: true });
  let server: NatsServer | undefined;
  let natsUrl = values.nats;
  if (!natsUrl) {
    server = await startNatsServer({ dir: join(dataDir, "nats"), port: 4222, partitions: nodeDefaults.partitions }).catch(() =>
      startNatsServer({ dir: join(dataDir, "nats"), partitions: nodeDefaults.partitions }),
    );
    natsUrl = server.url;
  }
  const running = await runNode({ natsUrl, dataDir: join(dataDir, "node"), rules, ...tuning(values) }, httpPort);
  let sim: ReturnType<typeof runSimulator> | undefined;
  let simConnection: Awaited<ReturnType<typeof connect>> | undefined;
  if (!values["no-sim"]) {
    simConnection = await connect({ servers: natsUrl.split(","), name: "tally-simulator" });
    sim = runSimulator({ nc: simConnection, robots: values.robots ? Number(values.robots) : 1000 });
  }
  console.log(`Tally is up.
  dashboard  http://127.0.0.1:${running.http.port}/
  query      http://127.0.0.1:${running.http.port}/v1/metrics/errors
  NATS       ${natsUrl}${server ? ` (local server, data in ${join(dataDir, "nats")})` : ""}
  simulator  ${sim ? `${values.robots ?? 1000} robots` : "off"}
Ctrl-C stops everything.`);
  await untilSignal(async () => {
    await sim?.stop();
    await simConnection?.close();
    await running.stop();
    await server?.stop();
  });
}

/** Tuning flags shared by `up` and `node` (README, "Operating"). */
const tuningOptions = {
  plugin: { type: "string", multiple: true },
  "out-of-orderness": { type: "string" },
  "idle-timeout": { type: "string" },
  "dedup-horizon": { type: "string" },
  "checkpoint-interval": { type: "string" },
  "emit-interval": { type: "string" },
  "event-retention": { type: "string" },
  retention: { type: "string" },
  replicas: { type: "string" },
  "heartbeat-ttl": { type: "string" },
  "rebalance-interval": { type: "string" },
  "max-moves": { type: "string" },
  "hot-threshold": { type: "string" },
  "hot-salts": { type: "string" },
  "hot-cool-after": { type: "string" },
} as const;

type DurationFlag =
  | "out-of-orderness"
  | "idle-timeout"
  | "dedup-horizon"
  | "checkpoint-interval"
  | "emit-interval"
  | "event-retention"
  | "heartbeat-ttl"
  | "rebalance-interval"
  | "hot-cool-after";
type CountFlag = "replicas" | "max-moves" | "hot-threshold" | "hot-salts";

function tuning(values: Partial<Record<DurationFlag | CountFlag | "retention", string>>): Partial<NodeOptions> {
  const count = (name: CountFlag) => {
    const text = values[name];
    if (text === undefined) return undefined;
    const n = Number(text);
    if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${name}: expected a whole number ≥ 1, got "${text}"`);
    return n;
  };
  const duration = (name: DurationFlag) => {
    const text = values[name];
    if (text === undefined) return undefined;
    try {
      return parseDuration(text);
    } catch (e) {
      throw new UsageError(`--${name}: ${(e as Error).message}`);
    }
  };
  return {
    outOfOrdernessMs: duration("out-of-orderness"),
    idleTimeoutMs: duration("idle-timeout"),
    dedupHorizonMs: duration("dedup-horizon"),
    checkpointIntervalMs: duration("checkpoint-interval"),
    emitIntervalMs: duration("emit-interval"),
    eventRetentionMs: duration("event-retention"),
    retention: retentionFlag(values.retention),
    replicas: count("replicas"),
    maxMovesPerRound: count("max-moves"),
    heartbeatTtlMs: duration("heartbeat-ttl"),
    rebalanceIntervalMs: duration("rebalance-interval"),
    hotThresholdPerSec: count("hot-threshold"),
    hotSalts: count("hot-salts"),
    hotCoolAfterMs: duration("hot-cool-after"),
  };
}

function retentionFlag(text: string | undefined) {
  if (text === undefined) return undefined;
  try {
    return parseRetention(text);
  } catch (e) {
    throw new UsageError(`--retention: ${(e as Error).message}`);
  }
}

async function node(args: string[]) {
  const { values } = parseArgs({
    args,
    options: { nats: { type: "string" }, data: { type: "string" }, http: { type: "string" }, rules: { type: "string" }, ...tuningOptions },
  });
  if (!values.nats || !values.data) throw new UsageError("--nats URL and --data DIR are required");
  await loadPlugins(values.plugin);
  const running = await runNode(
    { natsUrl: values.nats, dataDir: resolve(values.data), rules: loadRules(values.rules), ...tuning(values) },
    parsePort(values.http, 8080, "http"),
  );
  console.log(`tally node ${running.node.id} ready: http://127.0.0.1:${running.http.port}/ (NATS ${values.nats})`);
  await untilSignal(() => running.stop());
}

async function simulate(args: string[]) {
  const { values } = parseArgs({
    args,
    options: { nats: { type: "string" }, robots: { type: "string" }, interval: { type: "string" }, batch: { type: "boolean" } },
  });
  if (!values.nats) throw new UsageError("--nats URL is required");
  const nc = await connect({ servers: values.nats.split(","), name: "tally-simulator" });
  const robots = values.robots ? Number(values.robots) : 1000;
  const sim = runSimulator({ nc, robots, intervalMs: values.interval ? Number(values.interval) : undefined, batch: values.batch });
  console.log(`simulating ${robots} robots on ${values.nats}; Ctrl-C stops`);
  await untilSignal(async () => {
    await sim.stop();
    await nc.close();
    console.log(`published ${sim.published()} events`);
  });
}

async function printNatsConfig(args: string[]) {
  const { values } = parseArgs({ args, options: { port: { type: "string" }, store: { type: "string" } } });
  process.stdout.write(
    natsConfig({ port: parsePort(values.port, 4222, "port"), storeDir: values.store ?? "./data/nats/jetstream", partitions: nodeDefaults.partitions }) + "\n",
  );
}

/** Runs `shutdown` once on SIGINT/SIGTERM, then exits; a second signal exits at once. */
function untilSignal(shutdown: () => Promise<void>): Promise<never> {
  return new Promise(() => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) process.exit(130);
      stopping = true;
      console.log(`\n${signal}: stopping…`);
      shutdown().then(
        () => process.exit(0),
        (e) => {
          console.error(e);
          process.exit(1);
        },
      );
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
  });
}

await main();

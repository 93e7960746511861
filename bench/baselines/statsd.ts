/**
 * Baseline "statsd": Etsy StatsD (the `statsd` npm package) as a child process, fed the same
 * events as timers, sets and counters over UDP on loopback (`statsdPackets` in workload.ts).
 * The generator sends only while StatsD's socket buffer is under half full, so StatsD is fed as
 * fast as it reads without datagrams being dropped. A tiny backend in place of graphite counts the packets StatsD handled and reports them through
 * the admin interface (`stats` on its TCP management port); its default 10 s flush does the
 * aggregation (count, mean, upper_99 per timer, set sizes, counters).
 */
import { spawn } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { tempDir } from "../../test/harness.js";
import { freePort } from "../../test/processes.js";
import { repoRoot, sleep, track, type System } from "../harness.js";
import { statsdPackets, type Workload } from "../workload.js";

const statsdMain = join(repoRoot, "node_modules", "statsd", "stats.js");

export function statsdUnavailable(): string | undefined {
  return existsSync(statsdMain) ? undefined : "the statsd package is not installed (npm install --no-save statsd)";
}

const backend = `// Counts the packets StatsD handled; the admin "stats" command reports them.
let packets = 0;
exports.init = function (startupTime, config, events) {
  events.on("packet", function () { packets++; });
  events.on("status", function (write) { write(null, "bench", "packets", packets); });
  return true;
};
`;

export interface StatsdStack extends System {
  udpPort: number;
  /** Packets the kernel dropped at StatsD's socket (its receive buffer was full). */
  droppedEvents(): number;
  stop(): Promise<void>;
}

export async function startStatsd(workload: Workload, rich: boolean): Promise<StatsdStack> {
  const dir = tempDir("tally-bench-statsd-");
  const [udpPort, mgmtPort] = [await freePort(), await freePort()];
  writeFileSync(join(dir.path, "backend.js"), backend);
  const config = {
    address: "127.0.0.1",
    port: udpPort,
    mgmt_address: "127.0.0.1",
    mgmt_port: mgmtPort,
    backends: [join(dir.path, "backend.js")],
    percentThreshold: [99],
    flushInterval: 10_000,
  };
  writeFileSync(join(dir.path, "config.js"), JSON.stringify(config));
  const child = track(spawn(process.execPath, [statsdMain, join(dir.path, "config.js")], { stdio: ["ignore", "ignore", "inherit"] }));
  const { packets } = statsdPackets(workload, rich);
  const { linesPerEvent } = statsdPackets({ ...workload, sources: 1 }, rich);
  const eventsPerPacket = packets.reduce((n, p) => n + p.toString().split("\n").length, 0) / linesPerEvent / packets.length;

  let admin: Socket | undefined;
  for (let i = 0; !admin; i++) {
    admin = await new Promise<Socket | undefined>((resolve) => {
      const s = connect(mgmtPort, "127.0.0.1", () => resolve(s));
      s.once("error", () => resolve(undefined));
    });
    if (!admin) {
      if (i > 100) throw new Error("statsd did not start");
      await sleep(50);
    }
  }
  admin.setEncoding("ascii");
  const handled = async (): Promise<number> => {
    let text = "";
    const reply = new Promise<string>((resolve) => {
      const onData = (chunk: string) => {
        text += chunk;
        if (text.includes("END")) admin!.off("data", onData), resolve(text);
      };
      admin!.on("data", onData);
    });
    admin!.write("stats\n");
    return Number(/bench\.packets: (\d+)/.exec(await reply)?.[1] ?? 0) * eventsPerPacket;
  };
  const droppedEvents = () => {
    const hexPort = udpPort.toString(16).toUpperCase().padStart(4, "0");
    const line = readFileSync("/proc/net/udp", "utf8").split("\n").find((l) => l.includes(`:${hexPort} `) && l.trim().split(/\s+/)[1]!.endsWith(`:${hexPort}`));
    return line ? Number(line.trim().split(/\s+/).at(-1)) * eventsPerPacket : 0;
  };
  return {
    udpPort,
    droppedEvents,
    // Dropped datagrams leave the queue too: the generator stays just ahead of StatsD.
    progress: async () => {
      const done = await handled();
      return { done, settled: done + droppedEvents() };
    },
    pids: () => [child.pid],

    async stop() {
      admin!.destroy();
      child.kill("SIGKILL");
      dir.remove();
    },
  };
}

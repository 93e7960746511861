import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** The subject mapping that spreads events over partitions by source (README, "Ingest"). */
export function partitionMapping(partitions: number): Record<string, string> {
  return { "telemetry.*.*": `tally.events.{{partition(${partitions},1)}}.{{wildcard(1)}}.{{wildcard(2)}}` };
}

/** A nats-server config with JetStream and Tally's partition mapping. */
export function natsConfig(opts: { port: number; storeDir: string; partitions: number; host?: string; extra?: string }): string {
  const mappings = Object.entries(partitionMapping(opts.partitions))
    .map(([from, to]) => `  "${from}": "${to}"`)
    .join("\n");
  return [
    `host: "${opts.host ?? "127.0.0.1"}"`,
    `port: ${opts.port}`,
    `jetstream { store_dir: "${opts.storeDir}" }`,
    // A Tally node pulls from ~60 consumers on one connection: room for their pulls in flight
    // before the server calls it a slow consumer and drops deliveries (64 MiB by default).
    `max_pending: 268435456`,
    `mappings {\n${mappings}\n}`,
    opts.extra ?? "",
  ].join("\n");
}

export interface NatsServer {
  url: string;
  port: number;
  process: ChildProcess;
  /** Stops the server (SIGTERM, then SIGKILL after 5 s) and waits for it to exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * Starts a local nats-server (Debian's `nats-server` on PATH) with JetStream under `dir`.
 * Port 0 picks a free port; the real one is read from the server's own log line.
 */
export async function startNatsServer(opts: { dir: string; port?: number; partitions: number; extra?: string; binary?: string }): Promise<NatsServer> {
  mkdirSync(opts.dir, { recursive: true });
  const configFile = join(opts.dir, "nats-server.conf");
  writeFileSync(
    configFile,
    natsConfig({ port: opts.port ? opts.port : -1, storeDir: join(opts.dir, "jetstream"), partitions: opts.partitions, extra: opts.extra }),
  );
  const child = spawn(opts.binary ?? "nats-server", ["-c", configFile], { stdio: ["ignore", "ignore", "pipe"] });
  const port = await new Promise<number>((resolve, reject) => {
    let log = "";
    const onData = (chunk: Buffer) => {
      log += chunk.toString();
      const m = /Listening for client connections on [^\s]*:(\d+)/.exec(log);
      if (m) {
        child.stderr!.off("data", onData);
        child.stderr!.resume();
        resolve(Number(m[1]));
      }
    };
    child.stderr!.on("data", onData);
    child.once("error", (e) => reject(new Error(`cannot start nats-server: ${e.message} (is it installed? make install-deps)`)));
    child.once("exit", (code) => reject(new Error(`nats-server exited with ${code}:\n${log}`)));
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    process: child,
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill(signal);
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

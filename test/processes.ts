/**
 * Crash-test helpers: Tally nodes and nats-servers as separate OS processes, so a test can
 * `kill -9` them and start them again on the same ports and data dirs.
 *
 * Every child started here is tracked and SIGKILLed when the test process exits (or is
 * interrupted), so none outlives the test runner.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { request } from "node:http";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { startNatsServer, type NatsServer } from "../node/nats-server.js";
import { nodeDefaults } from "../node/tally-node.js";

/** The repository root: this file runs from dist/test/. */
const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const tallyBin = join(repoRoot, "bin", "tally.js");
const verbose = !!process.env.TALLY_TEST_VERBOSE;
const maxLogLines = 200;

// ---- child tracking -------------------------------------------------------------------------

const children = new Set<ChildProcess>();

function track(child: ChildProcess): void {
  if (child.exitCode !== null || child.signalCode !== null) return;
  children.add(child);
  child.once("exit", () => children.delete(child));
}

function killAll(): void {
  for (const child of children) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
  children.clear();
}

process.on("exit", killAll);
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  const onSignal = () => {
    killAll();
    process.off(signal, onSignal);
    // Only we listened: keep the default behaviour (die of the signal).
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  };
  process.on(signal, onSignal);
}

function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

function exitOf(child: ChildProcess): Promise<void> {
  if (hasExited(child)) return Promise.resolve();
  return new Promise((resolve) => {
    child.once("exit", () => resolve());
    child.once("error", () => resolve());
  });
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---- small helpers --------------------------------------------------------------------------

/** A free TCP port on 127.0.0.1 (bound and released; another process could take it meanwhile). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => (port ? resolve(port) : reject(new Error("no port assigned"))));
    });
  });
}

/**
 * One HTTP request without connection pooling (so nothing stale survives a kill -9 of the server).
 * Rejects on connection errors and after `timeoutMs`.
 */
export function httpRequest(
  url: string,
  opts: { method?: string; body?: string; timeoutMs?: number } = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: opts.method ?? "GET", agent: false, timeout: opts.timeoutMs ?? 2_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`timeout after ${opts.timeoutMs ?? 2_000} ms: ${url}`)));
    req.on("error", reject);
    if (opts.body !== undefined) {
      req.setHeader("Content-Type", "application/json");
      req.end(opts.body);
    } else req.end();
  });
}

// ---- Tally node ---------------------------------------------------------------------------

export interface NodeProcessOptions {
  natsUrl: string;
  dataDir: string;
  /** Fixed HTTP port; a free one is picked on the first start if absent, then reused. */
  httpPort?: number;
  rulesFile: string;
  extraArgs?: string[];
  env?: Record<string, string>;
}

/** `tally node` as a child process. `restart()` runs it again with the same options and port. */
export class NodeProcess {
  private child!: ChildProcess;
  private exitPromise!: Promise<void>;
  private readonly lines: string[] = [];
  private readyId: string | undefined;

  private constructor(readonly options: NodeProcessOptions & { httpPort: number }) {}

  static async start(opts: NodeProcessOptions): Promise<NodeProcess> {
    const httpPort = opts.httpPort ?? (await freePort());
    const node = new NodeProcess({ ...opts, httpPort });
    await node.launch();
    return node;
  }

  /** Starts the node again (same options, same port); stops it first (SIGTERM) if still running. */
  async restart(): Promise<this> {
    if (!this.exited) await this.stop();
    this.addLine(`--- restart ---`);
    await this.launch();
    return this;
  }

  /** SIGKILL, then waits for the exit. */
  async kill9(): Promise<void> {
    if (this.exited) return;
    this.child.kill("SIGKILL");
    await this.exitPromise;
  }

  /** SIGTERM, waits for the exit; SIGKILL after 10 s. */
  async stop(): Promise<void> {
    if (this.exited) return;
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 10_000);
    await this.exitPromise;
    clearTimeout(timer);
  }

  get url(): string {
    return `http://127.0.0.1:${this.options.httpPort}`;
  }

  get port(): number {
    return this.options.httpPort;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get exited(): boolean {
    return hasExited(this.child);
  }

  /** The node id from the last "ready" line, if printed yet. */
  get nodeId(): string | undefined {
    return this.readyId;
  }

  /** The last ~200 lines of stdout/stderr (across restarts), for assertion messages. */
  log(): string {
    return this.lines.join("\n");
  }

  private addLine(line: string): void {
    this.lines.push(line);
    if (this.lines.length > maxLogLines) this.lines.splice(0, this.lines.length - maxLogLines);
    if (verbose) process.stderr.write(`[tally :${this.options.httpPort}] ${line}\n`);
  }

  private async launch(): Promise<void> {
    const o = this.options;
    const args = [tallyBin, "node", "--nats", o.natsUrl, "--data", o.dataDir, "--http", String(o.httpPort), "--rules", o.rulesFile, ...(o.extraArgs ?? [])];
    const child = spawn(process.execPath, args, {
      cwd: repoRoot,
      env: { ...process.env, ...o.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child = child;
    this.readyId = undefined;
    track(child);
    let spawnError: Error | undefined;
    child.once("error", (e) => {
      spawnError = e;
      this.addLine(`spawn error: ${e.message}`);
    });
    this.exitPromise = exitOf(child);
    createInterface({ input: child.stdout! }).on("line", (line) => {
      const m = /^tally node (\S+) ready:/.exec(line);
      if (m) this.readyId = m[1];
      this.addLine(line);
    });
    createInterface({ input: child.stderr! }).on("line", (line) => this.addLine(`! ${line}`));

    const deadline = Date.now() + 20_000;
    for (;;) {
      if (spawnError || hasExited(child)) {
        await this.exitPromise;
        await sleep(20); // let the last output lines arrive
        throw new Error(
          `tally node exited before becoming healthy (${spawnError?.message ?? `code ${child.exitCode}, signal ${child.signalCode}`}):\n${this.log()}`,
        );
      }
      try {
        const res = await httpRequest(`${this.url}/healthz`, { timeoutMs: 1_000 });
        // Ready once it answers and has printed its "ready" line (with its id).
        if (res.status === 200 && this.readyId && !hasExited(child)) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        child.kill("SIGKILL");
        await this.exitPromise;
        throw new Error(`tally node not healthy on ${this.url} within 20 s:\n${this.log()}`);
      }
      await sleep(50);
    }
  }
}

// ---- nats-server --------------------------------------------------------------------------

export interface NatsProcessOptions {
  dir: string;
  partitions?: number;
  /** Fixed client port; a free one is picked on the first start if absent, then reused. */
  port?: number;
}

/** A nats-server with a fixed port and data dir, so clients reconnect to it after a restart. */
export class NatsProcess {
  private constructor(
    readonly dir: string,
    readonly port: number,
    readonly partitions: number,
    private server: NatsServer,
  ) {}

  static async start(opts: NatsProcessOptions): Promise<NatsProcess> {
    const port = opts.port ?? (await freePort());
    const partitions = opts.partitions ?? nodeDefaults.partitions;
    const server = await NatsProcess.launch(opts.dir, port, partitions);
    return new NatsProcess(opts.dir, port, partitions, server);
  }

  /** Stops the server with `signal` and starts it again on the same port and data dir. */
  async restart(signal: "SIGTERM" | "SIGKILL" = "SIGTERM"): Promise<void> {
    await this.server.stop(signal);
    this.server = await NatsProcess.launch(this.dir, this.port, this.partitions);
  }

  /** SIGTERM (SIGKILL after 5 s), then waits for the exit. */
  async stop(): Promise<void> {
    await this.server.stop();
  }

  /** SIGKILL, then waits for the exit. */
  async kill9(): Promise<void> {
    await this.server.stop("SIGKILL");
  }

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.server.process.pid;
  }

  get exited(): boolean {
    return hasExited(this.server.process);
  }

  private static async launch(dir: string, port: number, partitions: number): Promise<NatsServer> {
    let lastError: unknown;
    for (let attempt = 0; attempt < 10; attempt++) {
      try {
        const server = await startNatsServer({ dir, port, partitions });
        track(server.process);
        if (server.port !== port) {
          await server.stop("SIGKILL");
          throw new Error(`nats-server listens on ${server.port}, not ${port}`);
        }
        return server;
      } catch (e) {
        lastError = e;
        await sleep(200 * (attempt + 1));
      }
    }
    throw new Error(`cannot start nats-server on port ${port} in ${dir}: ${(lastError as Error)?.message}`);
  }
}

/**
 * A NATS cluster of `size` servers on loopback ports, each with its own JetStream store, so
 * streams and KV buckets can be replicated (R3). Resolves once JetStream answers through the
 * cluster (its meta leader is elected).
 */
export class NatsCluster {
  private constructor(
    readonly servers: NatsServer[],
    private readonly specs: { dir: string; port: number; extra: string }[],
    private readonly partitions: number,
  ) {}

  static async start(dir: string, size = 3, partitions = nodeDefaults.partitions): Promise<NatsCluster> {
    const ports = await Promise.all(Array.from({ length: size }, () => freePort()));
    const routePorts = await Promise.all(Array.from({ length: size }, () => freePort()));
    const specs = ports.map((port, i) => ({
      dir: join(dir, `n${i}`),
      port,
      extra: [
        `server_name: n${i}`,
        `cluster { name: tally, listen: "127.0.0.1:${routePorts[i]}", routes: [${routePorts
          .filter((_, j) => j !== i)
          .map((p) => `"nats-route://127.0.0.1:${p}"`)
          .join(", ")}] }`,
      ].join("\n"),
    }));
    const servers = await Promise.all(specs.map((s) => startNatsServer({ ...s, partitions })));
    for (const server of servers) track(server.process);
    const cluster = new NatsCluster(servers, specs, partitions);
    await cluster.jetStreamReady();
    return cluster;
  }

  /** Every server's URL, comma-separated (what `tally node --nats` takes). */
  get url(): string {
    return this.specs.map((s) => `nats://127.0.0.1:${s.port}`).join(",");
  }

  async kill9(i: number): Promise<void> {
    await this.servers[i]!.stop("SIGKILL");
  }

  async restart(i: number): Promise<void> {
    await this.servers[i]!.stop();
    this.servers[i] = await startNatsServer({ ...this.specs[i]!, partitions: this.partitions });
    track(this.servers[i]!.process);
  }

  async stop(): Promise<void> {
    await Promise.all(this.servers.map((s) => s.stop()));
  }

  private async jetStreamReady(): Promise<void> {
    const nc = await connect({ servers: this.url.split(",") });
    try {
      const deadline = Date.now() + 30_000;
      for (;;) {
        try {
          await (await jetstreamManager(nc)).getAccountInfo();
          return;
        } catch (e) {
          if (Date.now() > deadline) throw new Error(`JetStream not ready in the NATS cluster: ${(e as Error).message}`);
          await sleep(200);
        }
      }
    } finally {
      await nc.close();
    }
  }
}

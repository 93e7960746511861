/**
 * Baseline "limit": the transport's own ceiling. A fresh nats-server with Tally's streams and
 * subject mapping, and one plain JetStream consumer process that only decodes and counts.
 * With `redisPort` the same consumer also does one HINCRBY per event (the naive pipeline).
 */
import { fork } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { connect } from "@nats-io/transport-node";
import { ensureStreams } from "../../node/streams.js";
import { tempDir } from "../../test/harness.js";
import { NatsProcess } from "../../test/processes.js";
import { track, type System } from "../harness.js";
import type { ConsumerSpec } from "./consumer.js";

export interface BaselineStack extends System {
  natsUrl: string;
  stop(): Promise<void>;
}

export async function startLimit(opts: { redisPort?: number } = {}): Promise<BaselineStack> {
  const dir = tempDir("tally-bench-limit-");
  const nats = await NatsProcess.start({ dir: join(dir.path, "nats") });
  const nc = await connect({ servers: nats.url });
  await ensureStreams(nc); // exactly the events stream Tally reads (storage, limits, dedup window)
  await nc.close();
  const spec: ConsumerSpec = { nats: nats.url, redisPort: opts.redisPort };
  const child = track(fork(join(dirname(fileURLToPath(import.meta.url)), "consumer.js"), [JSON.stringify(spec)], { stdio: ["ignore", "inherit", "inherit", "ipc"] }));
  let done = 0;
  await new Promise<void>((resolve, reject) => {
    child.on("message", (m: { ready?: true; done?: number }) => {
      if (m.ready) resolve();
      if (m.done !== undefined) done = m.done;
    });
    child.once("exit", (code) => reject(new Error(`baseline consumer exited with ${code}`)));
  });
  return {
    natsUrl: nats.url,
    progress: async () => ({ done }),
    pids: () => [child.pid, nats.pid],
    async stop() {
      child.kill("SIGKILL");
      await nats.stop();
      dir.remove();
    },
  };
}

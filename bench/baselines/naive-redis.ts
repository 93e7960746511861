/**
 * Baseline "naive": a NATS consumer doing one Redis HINCRBY per event (pipelined per batch),
 * against Debian's redis-server started here on a free port, without persistence.
 */
import { spawn, spawnSync } from "node:child_process";
import { freePort } from "../../test/processes.js";
import { sleep, track } from "../harness.js";
import { startLimit, type BaselineStack } from "./limit.js";

/** Why the naive baseline cannot run here, or undefined if it can. */
export async function naiveUnavailable(): Promise<string | undefined> {
  if (spawnSync("redis-server", ["--version"]).status !== 0) return "redis-server is not installed (apt-get install redis-server)";
  try {
    await import("ioredis");
  } catch {
    return "the ioredis package is not installed (npm install --no-save ioredis)";
  }
  return undefined;
}

export async function startNaiveRedis(): Promise<BaselineStack> {
  const port = await freePort();
  const redis = track(spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: ["ignore", "pipe", "inherit"] }));
  await new Promise<void>((resolve, reject) => {
    let log = "";
    redis.stdout!.on("data", (chunk: Buffer) => {
      log += chunk.toString();
      if (log.includes("Ready to accept connections")) resolve();
    });
    redis.once("exit", (code) => reject(new Error(`redis-server exited with ${code}:\n${log}`)));
  });
  redis.stdout!.resume();
  const consumer = await startLimit({ redisPort: port });
  return {
    ...consumer,
    pids: () => [...consumer.pids(), redis.pid],
    async stop() {
      await consumer.stop();
      redis.kill("SIGTERM");
      await sleep(100);
    },
  };
}

import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseRuleDefinitions } from "../actors/rules.js";
import { runNode, type RunningNode } from "../cli/run-node.js";
import { startNatsServer, type NatsServer } from "../node/nats-server.js";
import { nodeDefaults, type NodeOptions } from "../node/tally-node.js";

/** A temporary directory removed by the returned cleanup. */
export function tempDir(prefix = "tally-test-"): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** A real nats-server on a free loopback port with its own data dir; several per suite are fine. */
export async function startTestNats(partitions = nodeDefaults.partitions): Promise<NatsServer & { dir: string; cleanup(): Promise<void> }> {
  const dir = tempDir("tally-nats-");
  const server = await startNatsServer({ dir: dir.path, partitions });
  return {
    ...server,
    dir: dir.path,
    async cleanup() {
      await server.stop();
      dir.remove();
    },
  };
}

export const fastSettings: Partial<NodeOptions> = {
  outOfOrdernessMs: 1_000,
  idleTimeoutMs: 500,
  watermarkIntervalMs: 50,
  emitIntervalMs: 50,
};

/** A node with its HTTP edge on a free port, tuned to finalize quickly. */
export async function startTestNode(
  natsUrl: string,
  rules: Record<string, unknown>[] | string,
  options: Partial<NodeOptions> = {},
): Promise<RunningNode & { dataDir: string; cleanup(): Promise<void> }> {
  const dir = tempDir("tally-node-");
  const running = await runNode(
    { natsUrl, dataDir: dir.path, rules: typeof rules === "string" ? parseRuleDefinitions(rules) : rules, ...fastSettings, ...options },
    0,
  );
  return {
    ...running,
    dataDir: dir.path,
    async cleanup() {
      await running.stop();
      dir.remove();
    },
  };
}

/** Polls `check` until it returns a value (not undefined) or `timeoutMs` passes. For state reached through I/O. */
export async function eventually<T>(check: () => Promise<T | undefined> | T | undefined, timeoutMs = 15_000, what = "condition"): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ""}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const tallyBin = fileURLToPath(new URL("../../bin/tally.js", import.meta.url));

/** Runs the real `tally` CLI; resolves with its stdout and stderr, rejects if it exits non-zero. */
export function tally(args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(process.execPath, [tallyBin, ...args], (error, stdout, stderr) => (error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve(stdout + stderr))),
  );
}

import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { eventually, tempDir } from "./harness.js";
import { freePort, httpRequest, NatsProcess, NodeProcess } from "./processes.js";

const rules = `
metrics:
  - name: n
    kind: x
    aggregates: [count]
    window: 1m
`;

let dir: ReturnType<typeof tempDir>;
let nats: NatsProcess | undefined;
let node: NodeProcess | undefined;

before(async () => {
  dir = tempDir("tally-processes-");
  nats = await NatsProcess.start({ dir: join(dir.path, "nats") });
});

after(async () => {
  await node?.stop();
  await nats?.stop();
  dir?.remove();
});

async function status(n: NodeProcess): Promise<{ node: string; ready: boolean }> {
  const res = await httpRequest(`${n.url}/v1/status`);
  assert.equal(res.status, 200, `GET /v1/status: ${res.status} ${res.body}\n${n.log()}`);
  return JSON.parse(res.body) as { node: string; ready: boolean };
}

test("freePort gives a usable port", async () => {
  const a = await freePort();
  assert.ok(a > 0 && a < 65536);
});

test("a node process survives kill -9, restart, and a NATS restart", async () => {
  const rulesFile = join(dir.path, "rules.yaml");
  writeFileSync(rulesFile, rules);
  node = await NodeProcess.start({ natsUrl: nats!.url, dataDir: join(dir.path, "node"), rulesFile });
  const n = node;

  const health = await httpRequest(`${n.url}/healthz`);
  assert.equal(health.status, 200, n.log());
  const before = await status(n);
  assert.equal(before.ready, true);
  assert.match(before.node, /^\S+$/);
  assert.equal(n.nodeId, before.node, n.log());
  const firstPid = n.pid;

  await n.kill9();
  assert.equal(n.exited, true);
  await assert.rejects(httpRequest(`${n.url}/healthz`, { timeoutMs: 1_000 }), "the killed node's port still answers");

  await n.restart();
  assert.notEqual(n.pid, firstPid);
  assert.equal((await httpRequest(`${n.url}/healthz`)).status, 200, n.log());
  assert.equal((await status(n)).node, before.node, `node id changed across restart\n${n.log()}`);

  await nats!.restart("SIGTERM");
  assert.equal(n.exited, false, `node died when NATS restarted\n${n.log()}`);
  await eventually(
    async () => ((await httpRequest(`${n.url}/healthz`, { timeoutMs: 1_000 })).status === 200 ? true : undefined),
    15_000,
    "healthz after NATS restart",
  );
  // Publishing needs a live NATS connection: proves the node reconnected by itself.
  await eventually(
    async () => {
      const res = await httpRequest(`${n.url}/v1/events`, {
        method: "POST",
        body: JSON.stringify({ source: "s1", kind: "x" }),
        timeoutMs: 2_000,
      });
      return res.status === 202 ? true : undefined;
    },
    20_000,
    `publishing through the node after NATS restart\n${n.log()}`,
  );
  assert.equal((await status(n)).node, before.node);
});

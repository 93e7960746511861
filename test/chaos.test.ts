import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import type { TelemetryEvent } from "../actors/event.js";
import { streams } from "../node/streams.js";
import { converge, countBy, fetchAudit, readStream, ReliablePublisher, revisionConflicts, type WantedValues } from "./exactness.js";
import { expectedWindows, prng, type ExpectedRule } from "./expected.js";
import { tempDir } from "./harness.js";
import { NatsProcess, NodeProcess } from "./processes.js";

/**
 * The promise users buy Tally for: a fleet's events with duplicates, reordering, late events
 * inside and past the lateness and past the horizon, a reconnection burst, two `kill -9`s of the
 * node and a NATS restart mid-stream; every window ends exactly equal to a batch computation.
 */

const rulesYaml = `
metrics:
  - name: temp
    kind: status
    value: temperature
    groupBy: [site]
    aggregates: [count, sum, min, max, avg]
    windows: [10s, { size: 20s, slide: 10s }]
    lateness: 3s
    horizon: 60s
  - name: errors
    kind: error
    groupBy: [code]
    aggregates: [count]
    window: 10s
    rollups: [20s]
    lateness: 3s
    horizon: 60s
`;
const rules: ExpectedRule[] = [
  {
    name: "temp",
    kind: "status",
    value: "temperature",
    groupBy: ["site"],
    windows: [
      { id: "10s", size: 10_000, slide: 10_000 },
      { id: "20s/10s", size: 20_000, slide: 10_000 },
    ],
  },
  // Its 20s windows are rollups of the 10s ones (short, so the last one is final soon after the run), computed here directly.
  {
    name: "errors",
    kind: "error",
    groupBy: ["code"],
    windows: [
      { id: "10s", size: 10_000, slide: 10_000 },
      { id: "20s", size: 20_000, slide: 20_000 },
    ],
  },
];

const runMs = 24_000;
const tickMs = 100;
const robots = 30;

let dir: ReturnType<typeof tempDir>;
let nats: NatsProcess;
let node: NodeProcess;
let nc: NatsConnection;

before(async () => {
  dir = tempDir("tally-chaos-");
  nats = await NatsProcess.start({ dir: join(dir.path, "nats") });
  writeFileSync(join(dir.path, "rules.yaml"), rulesYaml);
  node = await NodeProcess.start({
    natsUrl: nats.url,
    dataDir: join(dir.path, "node"),
    rulesFile: join(dir.path, "rules.yaml"),
    extraArgs: ["--out-of-orderness", "1s", "--idle-timeout", "1s", "--checkpoint-interval", "500ms"],
  });
  nc = await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
});

after(async () => {
  await nc?.close().catch(() => undefined);
  await node?.stop().catch(() => undefined);
  await nats?.stop().catch(() => undefined);
  dir?.remove();
});

interface Sent {
  /** Every valid event published, duplicates included. */
  valid: TelemetryEvent[];
  /** Of those, the ones past the horizon on purpose (each sent once). */
  tooLate: TelemetryEvent[];
  invalid: number;
  /** Event objects published in all (what the audit calls accepted). */
  accepted: number;
}

test("kill -9 twice and a NATS restart under late, duplicated, reordered load: every window exact", async () => {
  const random = prng(2026);
  const sent: Sent = { valid: [], tooLate: [], invalid: 0, accepted: 0 };
  const publisher = new ReliablePublisher(nc, "chaos");
  const reliably = (subject: string, payload: string) => publisher.publish(subject, payload);
  const publish = (e: TelemetryEvent) => {
    reliably(`telemetry.${e.source}.${e.kind}`, JSON.stringify({ id: e.id, ts: e.ts, tags: e.tags, values: e.values }));
    sent.accepted++;
  };
  const sites = ["berlin", "austin", "osaka", "lyon"];
  let seq = 0;
  const makeEvent = (robot: number, ts: number): TelemetryEvent => {
    const site = sites[robot % sites.length]!;
    const source = `robot-${robot}`;
    if (random() < 0.15) return { id: `${source}-${seq++}`, ts, source, kind: "error", tags: { site, code: `E${100 + Math.floor(random() * 4)}` }, values: {} };
    return { id: `${source}-${seq++}`, ts, source, kind: "status", tags: { site }, values: { temperature: 20 + Math.floor(random() * 50) } };
  };

  const chaos: { at: number; what: string; act: () => Promise<void> }[] = [
    { at: 6_000, what: "kill -9 node", act: async () => void (await node.kill9(), setTimeout(() => void node.restart(), 1_000)) },
    { at: 12_000, what: "restart NATS", act: () => nats.restart("SIGTERM") },
    { at: 15_000, what: "reconnection burst", act: async () => burst() },
    { at: 18_000, what: "kill -9 node again", act: async () => void (await node.kill9(), setTimeout(() => void node.restart(), 2_000)) },
  ];
  // A robot that was offline flushes 40 s of buffered events at once (the horizon here is 60 s).
  const burst = () => {
    const now = Date.now();
    for (let i = 0; i < 2_000; i++) {
      const e = makeEvent(robots, now - 40_000 + Math.floor(random() * 38_000));
      sent.valid.push(e);
      publish(e);
      if (random() < 0.2) publish(e); // a flaky link re-sends part of the buffer
    }
  };

  const start = Date.now();
  const pendingChaos: Promise<void>[] = [];
  while (Date.now() - start < runMs) {
    const elapsed = Date.now() - start;
    while (chaos.length > 0 && chaos[0]!.at <= elapsed) {
      const step = chaos.shift()!;
      pendingChaos.push(step.act());
    }
    const now = Date.now();
    for (let robot = 0; robot < robots; robot++) {
      const roll = random();
      let ts = now - Math.floor(random() * 800); // reordered within the out-of-orderness
      if (roll < 0.05) ts = now - 1_500 - Math.floor(random() * 1_500); // late, within the lateness
      else if (roll < 0.08) ts = now - 15_000 - Math.floor(random() * 25_000); // past the lateness: corrections
      const e = makeEvent(robot, ts);
      sent.valid.push(e);
      publish(e);
      if (random() < 0.15 && sent.valid.length > 10) {
        // a duplicate of something already sent (same id, same payload)
        publish(sent.valid[Math.floor(random() * sent.valid.length)]!);
      }
    }
    if (elapsed > 2_000 && random() < 0.3) {
      // past the horizon: filed as too_late, never aggregated (from a robot that is already active)
      const e = makeEvent(Math.floor(random() * robots), now - 5 * 60_000 - Math.floor(random() * 60_000));
      sent.tooLate.push(e);
      publish(e);
    }
    if (random() < 0.05) {
      reliably(`telemetry.robot-${Math.floor(random() * robots)}.status`, "{not json");
      sent.invalid++;
      sent.accepted++;
    }
    await new Promise((r) => setTimeout(r, tickMs));
  }
  await Promise.all(pendingChaos);
  await publisher.settled();
  assert.equal(node.exited, false, "the node is running again after the last kill");

  const expected = expectedWindows(rules, sent.valid);
  const duplicates = sent.accepted - sent.invalid - sent.tooLate.length - new Set(sent.valid.map((e) => e.id)).size;
  assert.ok(duplicates / sent.accepted >= 0.1, `at least 10% duplicates (${duplicates} of ${sent.accepted})`);

  // Converges: every expected window final or corrected with exactly the expected values.
  const range = { from: start - 120_000, to: Date.now() + 60_000 };
  const diffs = await converge(node.url, rules, expected, wanted, range);
  const dlq = await readStream(nc, streams.dlq);
  const reasons = countBy(dlq.map((m) => m.reason));
  assert.deepEqual(
    diffs,
    [],
    `windows differ from the batch computation:\n${diffs.slice(0, 20).join("\n")}\nDLQ: ${JSON.stringify([...reasons])} (sent ${sent.tooLate.length} too late, ${sent.invalid} invalid)\naudit: ${JSON.stringify(await fetchAudit(node.url, range.from, range.to))} accepted ${sent.accepted}\n--- node log ---\n${node.log()}`,
  );

  // Past the horizon: in the DLQ as too_late, each exactly once; bad JSON too.
  assert.equal(reasons.get("too_late") ?? 0, sent.tooLate.length, "too_late events filed exactly once each");
  assert.equal(reasons.get("invalid_json") ?? 0, sent.invalid);

  // Result sinks: one content per (window, revision), however often it was re-emitted.
  assert.deepEqual(revisionConflicts(await readStream(nc, streams.results)), []);

  // The audit reconciles: accepted = aggregated + unmatched + duplicates + dlq, over all minutes.
  // Awaited, up to its last minutes' finals: a start reads open windows' provisional results back
  // from the results stream (README, "Where a node keeps results"), but a kill -9 between a
  // window's change and its provisional result going out (throttled, not awaited by the
  // checkpoint) leaves an older one there, until the window's next change or its final.
  let audit = await fetchAudit(node.url, range.from, range.to);
  for (const deadline = Date.now() + 150_000; audit.accepted !== sent.accepted && Date.now() < deadline; ) {
    await new Promise((r) => setTimeout(r, 500));
    audit = await fetchAudit(node.url, range.from, range.to);
  }
  assert.equal(audit.accepted, sent.accepted, `audit ${JSON.stringify(audit)}`);
  assert.equal(audit.accepted, audit.aggregated + audit.unmatched + audit.duplicates + audit.dlq);
  assert.equal(audit.dlq, sent.tooLate.length + sent.invalid);
  assert.equal(audit.duplicates, duplicates);
});

const wanted: WantedValues = (key, want): Record<string, number> =>
  key.startsWith("temp|") ? { count: want.count, sum: want.sum, min: want.min, max: want.max, avg: want.sum / want.count } : { count: want.count };

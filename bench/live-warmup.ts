/**
 * How long a start's warm-up of the live view takes (`node/live-warmup.ts`): fills the results
 * stream with provisional batches as nodes publish them (32 KiB JSON arrays) for N open windows,
 * each updated `rounds` times, plus one final per window for a share of them, then warms a fresh
 * view from it. `node dist/bench/live-warmup.js [windows] [rounds]`.
 */
import { jetstream } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import type { WindowResult } from "../actors/window-result.js";
import { LiveResults, liveResultsDefaults } from "../node/live-results.js";
import { warmLiveResults } from "../node/live-warmup.js";
import { startNatsServer } from "../node/nats-server.js";
import { ProvisionalBatcher } from "../node/provisional-batcher.js";
import { ensureStreams, streams, subjects } from "../node/streams.js";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const windows = Number(process.argv[2] ?? 100_000);
const rounds = Number(process.argv[3] ?? 1);
const finalShare = 0.1;

const dir = mkdtempSync(join(tmpdir(), "tally-warmup-bench-"));
const server = await startNatsServer({ dir, partitions: 24 });
const nc = await connect({ servers: server.url });
try {
  const jsm = await ensureStreams(nc);
  const js = jetstream(nc);
  const start = Math.floor(Date.now() / 60_000) * 60_000;
  const result = (i: number, round: number, status: WindowResult["status"] = "provisional"): WindowResult => ({
    key: `devices|1m|${start}|d${i}`,
    metric: "devices",
    window: "1m",
    start,
    end: start + 60_000,
    dims: { device: `d${i}` },
    status,
    revision: status === "provisional" ? 0 : 1,
    eventCount: round + 1,
    lateCount: 0,
    watermark: Date.now(),
    values: { count: round + 1 },
    shard: i % 32,
    epoch: 1,
  });
  const batcher = new ProvisionalBatcher({
    flushMs: 50,
    maxBytes: 32 * 1024,
    subjectOf: (r) => subjects.results(r.metric, r.window),
    publish: (subject, body) => nc.publish(subject, body),
  });
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < windows; i++) {
      batcher.add(result(i, round));
      if (batcher.size >= 5_000) (batcher.flush(), await nc.flush());
    }
    batcher.flush();
    await nc.flush();
  }
  const finals = Math.floor(windows * finalShare);
  for (let i = 0; i < finals; i++) {
    nc.publish(subjects.results("devices", "1m"), JSON.stringify(result(i, rounds, "final")));
    if (i % 5_000 === 0) await nc.flush();
  }
  await nc.flush();
  let info = await jsm.streams.info(streams.results);
  for (let i = 0; i < 100 && info.state.last_seq === 0; i++) info = await jsm.streams.info(streams.results);
  await new Promise((r) => setTimeout(r, 500));
  info = await jsm.streams.info(streams.results);
  console.log(`stream: ${info.state.messages} messages, ${(info.state.bytes / 2 ** 20).toFixed(1)} MiB`);

  for (let run = 0; run < 3; run++) {
    const live = new LiveResults({ ...liveResultsDefaults, closesAt: (r) => r.end });
    const heapBefore = process.memoryUsage().heapUsed;
    const report = await warmLiveResults(js, jsm, live, { sinceMs: 0, untilSeq: info.state.last_seq, maxBytes: 2 ** 30, timeoutMs: 60_000 });
    const heapAfter = process.memoryUsage().heapUsed;
    console.log(
      `warm-up ${run + 1}: ${report.ms} ms, ${report.messages} messages (${(report.bytes / 2 ** 20).toFixed(1)} MiB), ${report.results} provisional results, ${report.taken} windows taken (view holds ${live.size}), heap +${((heapAfter - heapBefore) / 2 ** 20).toFixed(0)} MiB`,
    );
    if (live.size !== windows - finals) throw new Error(`expected ${windows - finals} windows in the view`);
  }
} finally {
  await nc.close();
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
}

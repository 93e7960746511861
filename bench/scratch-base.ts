import { saturate, peakRss } from "./harness.js";
import { startLimit } from "./baselines/limit.js";
import { protoBatch } from "./scenarios/robots.js";
for (let i = 0; i < 3; i++) {
  const s = await startLimit();
  const t = await saturate(s, { workload: protoBatch(10000), idPrefix: "a", target: { nats: s.natsUrl }, tsOffsetMs: 0 }, { warmupMs: 3000, measureMs: 10000 });
  console.log(JSON.stringify(t), s.pids().map((p) => Math.round(peakRss(p) / 2 ** 20)));
  await s.stop();
}

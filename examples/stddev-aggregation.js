// An aggregation plugin: sample standard deviation of a rule's value, mergeable
// (Welford's running moments, merged with Chan et al.'s formula).
// Use: npx tally node --plugin examples/stddev-aggregation.js ...   and in a rule: aggregates: [stddev]
import { registerAggregation } from "../dist/actors/aggregations/aggregation.js";

registerAggregation(/^stddev$/, () => ({
  stateKey: "stddev",
  needsValue: true,
  init: () => ({ n: 0, mean: 0, m2: 0 }),
  add(s, x) {
    s.n++;
    const d = x - s.mean;
    s.mean += d / s.n;
    s.m2 += d * (x - s.mean);
  },
  merge(a, b) {
    if (b.n === 0) return a;
    if (a.n === 0) return b;
    const n = a.n + b.n;
    const d = b.mean - a.mean;
    return { n, mean: a.mean + (d * b.n) / n, m2: a.m2 + b.m2 + (d * d * a.n * b.n) / n };
  },
  result: (s) => (s.n < 2 ? null : Math.sqrt(s.m2 / (s.n - 1))),
  encode: (s) => new TextEncoder().encode(JSON.stringify(s)),
  decode: (bytes) => JSON.parse(new TextDecoder().decode(bytes)),
}));

// The longest de-duplication of one 1,000-id batch (prefetch, then lookups) while a table grows,
// on random fingerprints: a rebuild done at once shows as one long batch. Wall time, so run it alone.
// Run: npx tsc -p tsconfig.json && node dist/bench/dedup-pause.js [ids, default 3000000]
import { RecentIds } from "../actors/recent-ids.js";

const n = Number(process.argv[2] ?? 3_000_000);
const batch = 1000;
const fingerprints = new Uint32Array(3 * batch);
let x = 12345;
const random = () => {
  x ^= x << 13;
  x ^= x >>> 17;
  x ^= x << 5;
  return x >>> 0;
};
const ids = new RecentIds(10 * 60_000, 0);
let longest = 0;
let over10 = 0;
const started = process.hrtime.bigint();
for (let done = 0; done < n; done += batch) {
  for (let j = 0; j < 3 * batch; j++) fingerprints[j] = random();
  const t = process.hrtime.bigint();
  ids.prefetch(fingerprints, 0, batch);
  for (let i = 0; i < batch; i++) if (ids.seenFingerprint(fingerprints, i, 0)) throw new Error("random fingerprints repeated");
  const ms = Number(process.hrtime.bigint() - t) / 1e6;
  longest = Math.max(longest, ms);
  if (ms > 10) over10++;
}
const nsPerId = Number(process.hrtime.bigint() - started) / n;
console.log(JSON.stringify({ ids: n, nsPerId: Math.round(nsPerId), longestBatchMs: Math.round(longest * 10) / 10, batchesOver10ms: over10, tableMB: ids.bytes / 2 ** 20 }));

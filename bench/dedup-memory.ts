// Memory cost of the router's de-duplication horizon: bytes per remembered event id (JS heap plus
// the table's typed arrays, which live outside it).
// Run: npx tsc -p tsconfig.json && node --expose-gc dist/bench/dedup-memory.js [millions]
import { RecentIds } from "../actors/recent-ids.js";

const millions = Number(process.argv[2] ?? 1);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with --expose-gc");
gc();
const used = () => process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers;
const before = used();
const ids = new RecentIds(10 * 60_000, 0);
const n = millions * 1_000_000;
for (let i = 0; i < n; i++) ids.seen(`robot-${String(i % 100_000).padStart(5, "0")}-${Math.floor(i / 100_000)}`, Math.floor((i / n) * 9 * 60_000));
gc();
const after = used();
const perId = (after - before) / n;
console.log(JSON.stringify({ ids: n, bytes: after - before, tableBytes: ids.bytes, bytesPerId: Math.round(perId), idLength: "robot-00042-17".length, remembered: ids.size }));

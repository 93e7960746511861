// The mailbox codec: ns per partial to encode and decode one router batch's message to a shard,
// the JSON layout (before) against the binary one, in the same run. The batch is the
// high-cardinality case's: 1000 count partials of distinct series (`devices` by `device`, 1m),
// one event each, made by the real router.
// Run: npx tsc -p tsconfig.json && node dist/bench/mailbox-codec.js [rounds] [--rich]
// (--rich: count, p50, distinct and top3 states in every partial; wrap in `flock /tmp/tally-cpu.lock`)
import type { TelemetryEvent } from "../actors/event.js";
import { Router } from "../actors/router.js";
import { parseRules } from "../actors/rules.js";
import { decodeMailbox, encodeMailbox, encodeMailboxJson, type MailboxMessage } from "../node/mailbox-codec.js";

const rounds = Number(process.argv[2] ?? 2000);
const rich = process.argv.includes("--rich");
const size = 1000;
const aggregates = rich ? `["count", "p50", "distinct:source", "top3:code"]` : `["count"]`;
const [rule] = parseRules(`{"metrics": [{"name": "devices", "kind": "status", "groupBy": ["device"], "value": "v", "aggregates": ${aggregates}, "window": "1m", "lateness": "5s"}]}`);
const t0 = Date.UTC(2026, 0, 1);
const events: TelemetryEvent[] = Array.from({ length: size }, (_, i) => ({
  id: `e${i}`,
  ts: t0 + i,
  source: `r${i % 50}`,
  kind: "status",
  tags: { device: `dev-${String(i).padStart(7, "0")}`, code: `E${i % 7}` },
  values: { v: i % 100 },
}));
const partials = new Router([rule!], 1).route(events).byShard.get(0)!;
if (partials.length !== size) throw new Error(`expected ${size} partials, got ${partials.length}`);
const message: MailboxMessage = { type: "partials", partition: 3, first: 1_000_001, last: 1_000_200, partials };

function time(encode: (m: MailboxMessage) => Uint8Array): { encode: number; decode: number; bytes: number } {
  let encodeNs = 0n;
  let decodeNs = 0n;
  let bytes = 0;
  for (let round = 0; round < rounds; round++) {
    const t = process.hrtime.bigint();
    const wire = encode(message);
    const u = process.hrtime.bigint();
    const back = decodeMailbox(wire);
    const v = process.hrtime.bigint();
    if (back.type !== "partials" || back.partials.length !== size) throw new Error("round trip lost partials");
    // The first half warms up.
    if (round >= rounds / 2) {
      encodeNs += u - t;
      decodeNs += v - u;
    }
    bytes = wire.byteLength;
  }
  const n = (rounds - Math.ceil(rounds / 2)) * size;
  return { encode: Number(encodeNs) / n, decode: Number(decodeNs) / n, bytes: bytes / size };
}

// Interleaved, twice, so neither gets the warmer machine.
const runs = { json: [] as ReturnType<typeof time>[], binary: [] as ReturnType<typeof time>[] };
for (let i = 0; i < 2; i++) {
  runs.json.push(time(encodeMailboxJson));
  runs.binary.push(time(encodeMailbox));
}
const best = (rs: ReturnType<typeof time>[]) => rs.reduce((a, b) => (a.encode + a.decode <= b.encode + b.decode ? a : b));
const json = best(runs.json);
const binary = best(runs.binary);
const row = (name: string, r: ReturnType<typeof time>) =>
  `${name.padEnd(7)} encode ${r.encode.toFixed(0).padStart(5)}  decode ${r.decode.toFixed(0).padStart(5)}  total ${(r.encode + r.decode).toFixed(0).padStart(5)} ns/partial  ${r.bytes.toFixed(0).padStart(4)} B/partial`;
console.log(`${size} ${rich ? "count/p50/distinct/top3" : "count"} partials of distinct series per message, ${rounds} rounds (best of 2, second half of each)`);
console.log(row("json", json));
console.log(row("binary", binary));
console.log(`json / binary: encode ×${(json.encode / binary.encode).toFixed(2)}, decode ×${(json.decode / binary.decode).toFixed(2)}, total ×${((json.encode + json.decode) / (binary.encode + binary.decode)).toFixed(2)}, bytes ×${(json.bytes / binary.bytes).toFixed(2)}`);

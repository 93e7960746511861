/**
 * The load generator, a child process of the bench (`fork`): publishes pre-encoded messages with
 * plain `nc.publish` (or UDP datagrams for StatsD) as fast as its parent allows.
 *
 * Closed loop (no `rate`): the parent sends `{allow: n}` (events the system has processed plus a
 * bounded backlog) and the generator publishes up to that, so the system is saturated without an
 * unbounded queue. Open loop: `rate` events/s for as long as it runs. It reports
 * `{published}` every 100 ms and stops on `{stop: true}`.
 */
import { createSocket } from "node:dgram";
import { readFileSync } from "node:fs";
import { connect, headers } from "@nats-io/transport-node";
import { buildMessages, fill, statsdPackets, type Workload } from "./workload.js";

export interface GeneratorSpec {
  workload: Workload;
  /** One letter, distinct per generator run against the same node: keeps event ids unique. */
  idPrefix: string;
  target: { nats: string } | { udpPort: number; rich: boolean };
  /** Event time = wall clock + this. */
  tsOffsetMs: number;
  /** Open loop at this many events/s; closed loop when absent. */
  rate?: number;
  seed?: number;
}

export type ToGenerator = { allow: number } | { stop: true };
export type FromGenerator = { ready: true } | { published: number } | { done: number };

const spec = JSON.parse(process.argv[2]!) as GeneratorSpec;
const send = (m: FromGenerator) => process.connected && process.send!(m);
let allowed = 0;
let stopping = false;
let wake: (() => void) | undefined;
process.on("disconnect", () => ((stopping = true), wake?.())); // the bench is gone
process.on("message", (m: ToGenerator) => {
  if ("allow" in m) allowed = m.allow;
  else stopping = true;
  wake?.();
});

let published = 0;
let publishOne: () => number;
/** Whether the receiver has room (UDP: StatsD's socket buffer, 208 KiB by default, is not nearly full). */
let room = () => true;
let flush: () => Promise<void>;
let close: () => Promise<void>;
const random = mulberry32(spec.seed ?? 1);

if ("nats" in spec.target) {
  const w = spec.workload;
  const nc = await connect({ servers: spec.target.nats, name: "tally-bench-generator" });
  const messages = buildMessages(w, spec.idPrefix);
  const opts = w.encoding === "protobuf" ? { headers: headers() } : undefined;
  opts?.headers.set("Content-Type", "application/protobuf");
  const recent: { subject: string; bytes: Buffer; events: number }[] = [];
  let seq = 0;
  let device = 0;
  publishOne = () => {
    if (w.duplicates && recent.length > 0 && random() < w.duplicates) {
      const again = recent[Math.floor(random() * recent.length)]!;
      nc.publish(again.subject, again.bytes, opts);
      published += again.events;
      return again.bytes.length;
    }
    const { subject, template } = messages[seq % messages.length]!;
    const bytes = fill(template, w.encoding, seq, Date.now() + spec.tsOffsetMs, device, w.devices ?? 1);
    device += template.devices.length;
    nc.publish(subject, bytes, opts);
    if (w.duplicates) recent[seq % 256] = { subject, bytes, events: template.events };
    seq++;
    published += template.events;
    return bytes.length;
  };
  flush = () => nc.flush();
  close = () => nc.close();
} else {
  const port = spec.target.udpPort;
  const { packets, linesPerEvent } = statsdPackets(spec.workload, spec.target.rich);
  const events = packets.map((p) => (p.toString().split("\n").length / linesPerEvent) | 0);
  const socket = createSocket("udp4");
  await new Promise<void>((resolve) => socket.connect(port, "127.0.0.1", () => resolve()));
  let k = 0;
  let last: Promise<void> = Promise.resolve();
  publishOne = () => {
    const i = k++ % packets.length;
    last = new Promise((resolve) => socket.send(packets[i]!, () => resolve()));
    published += events[i]!;
    return packets[i]!.length;
  };
  flush = () => last;
  close = async () => void socket.close();
  // A datagram that finds the receiver's buffer full is dropped: send only while it has room.
  const hexPort = `:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  let checks = 0;
  let free = true;
  room = () => {
    if (!free || checks++ % 8 === 0) {
      const line = readFileSync("/proc/net/udp", "utf8").split("\n").find((l) => l.trim().split(/\s+/)[1]?.endsWith(hexPort));
      free = !line || parseInt(line.trim().split(/\s+/)[4]!.split(":")[1]!, 16) < 150_000;
    }
    return free;
  };
}

send({ ready: true });
const reporter = setInterval(() => send({ published }), 100);
const startedAt = Date.now();
while (!stopping) {
  const budget = spec.rate ? (spec.rate * (Date.now() - startedAt)) / 1000 : allowed;
  let bytes = 0;
  while (published < budget && bytes < 1 << 20 && room()) bytes += publishOne();
  if (bytes > 0) await flush();
  else if (!room()) await new Promise((resolve) => setImmediate(resolve));
  else await new Promise<void>((resolve) => ((wake = resolve), setTimeout(resolve, spec.rate ? 2 : 10)));
}
clearInterval(reporter);
await flush();
await close();
if (process.connected) {
  send({ done: published });
  process.disconnect();
}

function mulberry32(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

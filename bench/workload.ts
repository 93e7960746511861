/**
 * What the load generator sends, as pre-encoded templates that are copied and patched per message
 * (ids, event times, device tags are fixed-width fields at known offsets), so publishing costs a
 * memcpy and a few digit writes per event instead of a JSON.stringify or a protobuf encode.
 *
 * Events: kind `status` from sources `r000000`…, tags site (10), model (4), code (Zipf-ish over 20
 * codes), optionally `device` (high cardinality), value `cycle`. Ids are 14 characters.
 */
import type { TelemetryEvent } from "../actors/event.js";
import { fnv1a32 } from "../cluster/shards.js";
import { encodeEventBatch } from "../proto/codec.js";

export type Encoding = "json" | "protobuf";

export interface Workload {
  sources: number;
  encoding: Encoding;
  /** Events per message (1 = single JSON events). */
  batch: number;
  /** `source`: a batch holds one source's events (its own subject); `partition`: the mixed events of one partition (protobuf only). */
  grouping: "source" | "partition";
  /** Distinct `device` tag values, cycled through event by event (0: no device tag). */
  devices?: number;
  /** This fraction of events carry an event time `minMs`–`maxMs` behind the others. */
  late?: { fraction: number; minMs: number; maxMs: number };
  /** This fraction of messages is published a second time (same ids). */
  duplicates?: number;
}

export const partitions = 24;
export const kind = "status";
const variants = 64;
const idDigits = 9;
const deviceDigits = 7;
const codes = Array.from({ length: 20 }, (_, i) => `E${100 + i}`);

export const sourceName = (i: number) => `r${String(i).padStart(6, "0")}`;
/** The server's `partition(24,1)` mapping: FNV-1a of the source token. */
export const partitionOf = (source: string) => fnv1a32(source) % partitions;

/** Deterministic per-event content: the same workload always sends the same values. */
function eventAt(j: number, site: number): { tags: Record<string, string>; value: number } {
  const u = ((j * 2654435761) >>> 0) / 2 ** 32;
  return {
    tags: { site: `site${site % 10}`, model: `m${site % 4}`, code: codes[Math.floor(codes.length * u * u)]! },
    value: Math.round((20 + 80 * u) * 100) / 100,
  };
}

export interface Template {
  bytes: Buffer;
  events: number;
  /** Offsets of each event id's message-number digits. */
  ids: number[];
  /** JSON: offsets of each event's 13-digit ts; protobuf: the offset of ts[0]'s 6-byte varint. */
  ts: number[];
  /** JSON: each event's offset from the message time (negative for late events). */
  tsDelta: number[];
  /** Offsets of the device tag digits. */
  devices: number[];
}

export interface Message {
  subject: string;
  template: Template;
}

/** The cyclic sequence of messages one pass over the fleet publishes. */
export function buildMessages(w: Workload, idPrefix: string): Message[] {
  // JSON events take their source from the subject; protobuf templates carry theirs in a column.
  if ((w.grouping === "partition") !== (w.encoding === "protobuf")) throw new Error("JSON is grouped per source, protobuf per partition");
  const sources = Array.from({ length: w.sources }, (_, i) => sourceName(i));
  const subject = (s: string) => `telemetry.${s}.${kind}`;
  if (w.grouping === "source") {
    const templates = Array.from({ length: Math.min(variants, w.sources) }, (_, v) =>
      buildTemplate(w, idPrefix, Array.from({ length: w.batch }, () => ({ source: sourceName(v), site: v }))),
    );
    return sources.map((s, i) => ({ subject: subject(s), template: templates[i % templates.length]! }));
  }
  // One partition's sources, round-robin, `batch` events per message; partitions interleaved.
  const byPartition: number[][] = Array.from({ length: partitions }, () => []);
  sources.forEach((s, i) => byPartition[partitionOf(s)]!.push(i));
  const perPartition = byPartition.map((members) => {
    const out: Message[] = [];
    for (let first = 0; first < Math.max(1, members.length); first += w.batch) {
      const slots = Array.from({ length: w.batch }, (_, j) => {
        const i = members[(first + j) % members.length]!;
        return { source: sources[i]!, site: i };
      });
      out.push({ subject: subject(slots[0]!.source), template: buildTemplate(w, idPrefix, slots) });
    }
    return out;
  });
  const messages: Message[] = [];
  for (let t = 0; perPartition.some((m) => t < m.length); t++) for (const m of perPartition) if (t < m.length) messages.push(m[t]!);
  return messages;
}

function lateDelta(w: Workload, j: number): number {
  // Golden-ratio sequence: exactly `fraction` of any run of events, spread evenly.
  if (!w.late || j === 0 || (j * 0.6180339887) % 1 >= w.late.fraction) return 0;
  return -(w.late.minMs + ((j * 7919) % Math.max(1, w.late.maxMs - w.late.minMs)));
}

function buildTemplate(w: Workload, idPrefix: string, slots: { source: string; site: number }[]): Template {
  // Placeholders that are unique in the encoded bytes, so their offsets can be found.
  const protoTs = 1_700_000_000_000;
  const tsDelta = slots.map((_, j) => lateDelta(w, j));
  const events: TelemetryEvent[] = slots.map(({ source, site }, j) => {
    const { tags, value } = eventAt(j + site * 7, site);
    if (w.devices) tags.device = `d${String(j).padStart(deviceDigits, "0")}`;
    const id = `${idPrefix}${"0".repeat(idDigits)}${String(j).padStart(4, "0")}`;
    const ts = w.encoding === "json" ? 1_000_000_000_000 + j : protoTs + tsDelta[j]!;
    return { id, ts, source, kind, tags, values: { cycle: value } };
  });
  const wire = events.map(({ id, ts, tags, values }) => ({ id, ts, tags, values }));
  const bytes =
    w.encoding === "json" ? Buffer.from(JSON.stringify(w.batch === 1 ? wire[0] : wire)) : Buffer.from(encodeEventBatch(events));
  // Each placeholder is unique and they appear in event order, so each search starts after the last.
  const offsets = (needles: (string | Buffer)[], skip: number): number[] => {
    let from = 0;
    return needles.map((needle) => {
      const at = bytes.indexOf(needle, from);
      if (at < 0) throw new Error(`template: ${needle} not found`);
      from = at + 1;
      return at + skip;
    });
  };
  return {
    bytes,
    events: events.length,
    ids: offsets(events.map((e) => e.id), idPrefix.length),
    ts: w.encoding === "json" ? offsets(events.map((e) => `"ts":${e.ts},`), 5) : offsets([zigzag6(protoTs)], 0),
    tsDelta,
    devices: w.devices ? offsets(events.map((e) => e.tags.device!), 1) : [],
  };
}

const zz = (n: number) => (n >= 0 ? 2 * n : -2 * n - 1);
function varint(n: number): Buffer {
  const out: number[] = [];
  while (n >= 128) out.push((n % 128) | 0x80), (n = Math.floor(n / 128));
  out.push(n);
  return Buffer.from(out);
}
function zigzag6(ts: number): Buffer {
  const b = varint(zz(ts));
  if (b.length !== 6) throw new Error(`ts ${ts} does not encode in 6 varint bytes`);
  return b;
}

export function writeDigits(buf: Buffer, at: number, width: number, n: number): void {
  for (let i = at + width - 1; i >= at; i--) {
    buf[i] = 48 + (n % 10);
    n = Math.floor(n / 10);
  }
}

/** Fills a copy of the template: message number `seq` in every id, event time `ts`, devices from `device` on. */
export function fill(t: Template, encoding: Encoding, seq: number, ts: number, device: number, devices: number): Buffer {
  const buf = Buffer.from(t.bytes);
  for (const at of t.ids) writeDigits(buf, at, idDigits, seq);
  if (encoding === "json") for (let j = 0; j < t.ts.length; j++) writeDigits(buf, t.ts[j]!, 13, ts + t.tsDelta[j]!);
  else buf.set(zigzag6(ts), t.ts[0]!);
  for (const at of t.devices) writeDigits(buf, at, deviceDigits, device++ % devices);
  return buf;
}

/**
 * StatsD lines for the same events: per event a timer per rule (count, mean, p99 come from it),
 * and for the rich rule set also a set (distinct sources) and a counter per code (top codes).
 */
export function statsdPackets(w: Workload, rich: boolean, maxBytes = 1400): { packets: Buffer[]; linesPerEvent: number } {
  const lines: string[] = [];
  const events = Math.max(w.sources, 20_000);
  let linesPerEvent = 0;
  for (let k = 0; k < events; k++) {
    const i = k % w.sources;
    const { tags, value } = eventAt(k % 1000 + i * 7, i);
    const source = sourceName(i);
    const own = [`robot_cycle.${source}:${value}|ms`];
    if (rich) own.push(`site_cycle.${tags.site}:${value}|ms`, `site_sources.${tags.site}:${source}|s`, `site_codes.${tags.site}.${tags.code}:1|c`);
    linesPerEvent = own.length;
    lines.push(own.join("\n"));
  }
  const packets: Buffer[] = [];
  let current = "";
  for (const event of lines) {
    if (current && current.length + 1 + event.length > maxBytes) packets.push(Buffer.from(current)), (current = "");
    current = current ? `${current}\n${event}` : event;
  }
  if (current) packets.push(Buffer.from(current));
  return { packets, linesPerEvent };
}

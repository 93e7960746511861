/**
 * What the end-to-end exactness tests (chaos, cluster) share: publishing as a careful client
 * does, reading every window back over HTTP, and comparing it with the independent computation.
 */
import { DeliverPolicy, jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { resultsOf } from "../node/provisional-batcher.js";
import type { ExpectedRule, ExpectedWindow } from "./expected.js";
import { httpRequest } from "./processes.js";

/**
 * A JetStream publish, retried until the stream acks it. A fire-and-forget core publish that
 * reaches a server whose JetStream is still starting is dropped by the server itself; no consumer
 * can get it back. Each publish has its own message id, so a retry is stored once, while
 * deliberate duplicates (same event id, new publish) still reach Tally's own de-duplication.
 */
export class ReliablePublisher {
  private readonly inFlight = new Set<Promise<void>>();
  private publishes = 0;

  constructor(
    private readonly nc: NatsConnection,
    private readonly prefix: string,
  ) {}

  publish(subject: string, payload: string): void {
    const msgID = `${this.prefix}-${this.publishes++}`;
    const js = jetstream(this.nc);
    const attempt = async (): Promise<void> => {
      for (;;) {
        try {
          await js.publish(subject, payload, { msgID, timeout: 2_000 });
          return;
        } catch {
          await new Promise((r) => setTimeout(r, 200));
        }
      }
    };
    const p = attempt().finally(() => this.inFlight.delete(p));
    this.inFlight.add(p);
  }

  /** Resolves once everything published so far is stored. */
  async settled(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all([...this.inFlight]);
  }
}

export interface Point {
  start: number;
  dims: Record<string, string>;
  status: string;
  values: Record<string, unknown>;
}

/** Every window of `rules` in [from, to) as one node answers, keyed `metric|window|start|dims`; undefined if it does not answer. */
export async function fetchWindows(nodeUrl: string, rules: readonly ExpectedRule[], from: number, to: number): Promise<Map<string, Point> | undefined> {
  const out = new Map<string, Point>();
  for (const rule of rules) {
    for (const w of rule.windows) {
      const res = await httpRequest(`${nodeUrl}/v1/metrics/${rule.name}?window=${encodeURIComponent(w.id)}&from=${from}&to=${to}`).catch(() => undefined);
      if (!res || res.status !== 200) return undefined;
      for (const p of (JSON.parse(res.body) as { points: Point[] }).points) out.set(`${rule.name}|${w.id}|${p.start}|${JSON.stringify(p.dims)}`, p);
    }
  }
  return out;
}

/** The values a window should show: count for every metric, the value aggregates for those with a value. */
export type WantedValues = (key: string, want: ExpectedWindow) => Record<string, number>;

/** Every way `got` differs from `expected` (empty when every window is final and exact). */
export function describeDiff(got: Map<string, Point> | undefined, expected: Map<string, ExpectedWindow>, wanted: WantedValues): string[] {
  if (!got) return ["the node does not answer"];
  const diffs: string[] = [];
  for (const [key, want] of expected) {
    const p = got.get(key);
    if (!p) {
      diffs.push(`${key}: missing (want count ${want.count})`);
      continue;
    }
    if (p.status === "provisional") diffs.push(`${key}: still provisional`);
    const wantValues = wanted(key, want);
    if (JSON.stringify(p.values) !== JSON.stringify(wantValues)) diffs.push(`${key}: got ${JSON.stringify(p.values)} want ${JSON.stringify(wantValues)}`);
  }
  for (const key of got.keys()) if (!expected.has(key)) diffs.push(`${key}: unexpected window`);
  return diffs;
}

/** Polls one node until its windows equal `expected` or `timeoutMs` passes; returns the last differences. */
export async function converge(
  nodeUrl: string,
  rules: readonly ExpectedRule[],
  expected: Map<string, ExpectedWindow>,
  wanted: WantedValues,
  range: { from: number; to: number },
  timeoutMs = 60_000,
): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const diffs = describeDiff(await fetchWindows(nodeUrl, rules, range.from, range.to), expected, wanted);
    if (diffs.length === 0 || Date.now() > deadline) return diffs;
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** Audit totals over [from, to) as one node answers. */
export async function fetchAudit(nodeUrl: string, from: number, to: number): Promise<Record<string, number>> {
  const res = await httpRequest(`${nodeUrl}/v1/metrics/_audit?window=1m&from=${from}&to=${to}`);
  const totals: Record<string, number> = { accepted: 0, aggregated: 0, unmatched: 0, duplicates: 0, dlq: 0 };
  for (const p of (JSON.parse(res.body) as { points: Point[] }).points) totals[p.dims.counter!] = (totals[p.dims.counter!] ?? 0) + ((p.values.count as number) ?? 0);
  return totals;
}

/** Every message of a stream: its `Tally-Reason` header (DLQ) and body. */
export async function readStream(nc: NatsConnection, stream: string): Promise<{ reason: string; body: string; data: Uint8Array }[]> {
  const js = jetstream(nc);
  const jsm = await js.jetstreamManager();
  const total = (await jsm.streams.info(stream)).state.last_seq;
  const out: { reason: string; body: string; data: Uint8Array }[] = [];
  if (total === 0) return out;
  const consumer = await js.consumers.get(stream, { deliver_policy: DeliverPolicy.All });
  const messages = await consumer.consume();
  for await (const m of messages) {
    out.push({ reason: m.headers?.get("Tally-Reason") ?? "", body: m.string(), data: m.data });
    if (m.seq >= total) break;
  }
  messages.stop();
  return out;
}

/** Final and corrected results: exactly one content per (window, revision), however often re-emitted. Returns the conflicts. */
export function revisionConflicts(results: { body: string }[]): string[] {
  const byRevision = new Map<string, string>();
  const conflicts: string[] = [];
  // A message is one final or corrected result, or a batch (array) of provisional ones.
  for (const result of results.flatMap((r) => resultsOf(r.body))) {
    if (result.status === "provisional") continue;
    const id = `${result.key}#${result.revision}`;
    const content = JSON.stringify([result.values, result.eventCount]);
    if (byRevision.has(id) && byRevision.get(id) !== content) conflicts.push(`${id}: ${byRevision.get(id)} vs ${content}`);
    byRevision.set(id, content);
  }
  return conflicts;
}

export function countBy(items: string[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const item of items) counts.set(item, (counts.get(item) ?? 0) + 1);
  return counts;
}

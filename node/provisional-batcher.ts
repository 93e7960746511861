import type { EncodedResult, WindowResult } from "../actors/window-result.js";

export interface ProvisionalBatcherOptions {
  /** How long a provisional result may wait for others to share its message (ms). */
  flushMs: number;
  /** A message holds at most this many characters of JSON (×3 at worst in UTF-8 bytes: under NATS's 1 MiB max payload). */
  maxBytes: number;
  /** Publishes one message: a JSON array of provisional results of one subject. */
  publish(subject: string, body: string): void;
  subjectOf(result: Pick<WindowResult, "metric" | "window">): string;
}

/**
 * Provisional results leave a node in batches: one message per results subject holding every
 * provisional result of that subject emitted within `flushMs` (a JSON array), instead of one
 * message per window. With many active windows (200k count windows, each changing every few
 * seconds) one message per result was most of a node's work: a socket write, a JetStream store
 * and a consumer delivery each, per window change.
 *
 * Per window only the newest waiting result is kept (a newer one replaces it in place), and a
 * window's final or corrected result drops its waiting provisional one (`supersede`): so a
 * subscriber never sees a provisional result of a window after its final one from this node.
 */
export class ProvisionalBatcher {
  /**
   * Per subject, the waiting results by window key (insertion order: the order they were
   * emitted); a row's comes as its JSON already (`EncodedResult`).
   */
  private readonly pending = new Map<string, Map<string, WindowResult | EncodedResult>>();
  private timer?: NodeJS.Timeout;
  private count = 0;
  /** Messages and results sent so far (status, tests). */
  messages = 0;
  results = 0;

  constructor(private readonly options: ProvisionalBatcherOptions) {}

  add(result: WindowResult | EncodedResult): void {
    const subject = this.options.subjectOf(result);
    let waiting = this.pending.get(subject);
    if (!waiting) this.pending.set(subject, (waiting = new Map()));
    if (!waiting.has(result.key)) this.count++;
    waiting.set(result.key, result);
    this.timer ??= setTimeout(() => {
      try {
        this.flush();
      } catch {
        // A closed connection: they are dropped, as a plain publish would drop them (the node is
        // stopping, or reconnecting, and the next provisional result of each window supersedes them).
      }
    }, this.options.flushMs);
  }

  /** A final or corrected result of this window is going out: its waiting provisional one is stale. */
  supersede(result: Pick<WindowResult, "key" | "metric" | "window">): void {
    const waiting = this.pending.get(this.options.subjectOf(result));
    if (waiting?.delete(result.key)) this.count--;
  }

  /** Results waiting to be sent. */
  get size(): number {
    return this.count;
  }

  /** Sends everything waiting now. Throws if the connection is closed (the results are dropped). */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const pending = [...this.pending];
    this.pending.clear();
    this.count = 0;
    for (const [subject, waiting] of pending) {
      let body = "";
      for (const result of waiting.values()) {
        const json = "json" in result ? result.json : JSON.stringify(result);
        if (body.length > 0 && body.length + json.length + 2 > this.options.maxBytes) {
          this.send(subject, body);
          body = "";
        }
        body = body.length === 0 ? "[" + json : body + "," + json;
        this.results++;
      }
      if (body.length > 0) this.send(subject, body);
    }
  }

  /** Drops everything waiting, sends nothing (a closed connection). */
  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.pending.clear();
    this.count = 0;
  }

  private send(subject: string, body: string): void {
    this.messages++;
    this.options.publish(subject, body + "]");
  }
}

/** A message on a results subject: one result (final, corrected) or a batch of provisional ones. */
export function resultsOf(body: string): WindowResult[] {
  const parsed = JSON.parse(body) as WindowResult | WindowResult[];
  return Array.isArray(parsed) ? parsed : [parsed];
}

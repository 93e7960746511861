import { createInbox, headers, type Msg, type NatsConnection, type Subscription } from "@nats-io/transport-node";

export interface PublishOptions {
  /** `Nats-Msg-Id`: the stream drops a second message with this id within its duplicate window. */
  msgID?: string;
  /** `Nats-Expected-Last-Subject-Sequence`: refused unless the subject's last message is this one. */
  expectLastSubjectSequence?: number;
}

export interface PublishAck {
  stream: string;
  seq: number;
  duplicate: boolean;
}

/** The stream refused the message (e.g. a wrong last sequence), with JetStream's own code. */
export class PublishRefused extends Error {
  constructor(
    readonly code: number,
    readonly errCode: number,
    description: string,
  ) {
    super(`JetStream refused the publish: ${description} (${errCode})`);
    this.name = "PublishRefused";
  }
}

/**
 * JetStream publishes whose acks come back on one subscription: a plain publish with a reply
 * subject under this publisher's inbox, its ack matched by that subject's last token.
 *
 * Why not `js.publish`: it is a request per message (an inbox token, a mux entry, a timer, and an
 * `Error` built after every ack, nats.js 3.x), ~2.5× slower for small messages here (DESIGN.md)
 * and 2.7% of a saturated node's CPU in `RequestError` alone. Here a publish costs a header, a map
 * entry and a promise; one timer a second fails the publishes whose ack is overdue.
 */
/**
 * How long a JetStream publish waits for its ack before it counts as failed (which makes its
 * shard or partition recover: crash-only). Not nats.js's 5 s: a saturated node handles acks late
 * (they queue behind the work it is doing), and at 5 s its components recovered over and over,
 * each recovery replaying work and adding load: fewer events/s, not more safety. A publish that
 * really is lost still fails, 30 s later.
 */
export const ackTimeoutMs = 30_000;

export class AckedPublisher {
  private readonly inbox = createInbox();
  private readonly subscription: Subscription;
  private readonly waiting = new Map<number, Waiting>();
  private next = 0;
  private readonly sweeper: NodeJS.Timeout;

  constructor(
    private readonly nc: NatsConnection,
    private readonly timeoutMs = ackTimeoutMs,
  ) {
    this.subscription = nc.subscribe(`${this.inbox}.*`, { callback: (_err, msg) => this.settle(msg) });
    this.sweeper = setInterval(() => this.expire(), Math.min(1_000, timeoutMs)).unref();
  }

  publish(subject: string, data: Uint8Array | string, options: PublishOptions = {}): Promise<PublishAck> {
    const id = this.next++;
    const h = options.msgID !== undefined || options.expectLastSubjectSequence !== undefined ? headers() : undefined;
    if (options.msgID !== undefined) h!.set("Nats-Msg-Id", options.msgID);
    if (options.expectLastSubjectSequence !== undefined) h!.set("Nats-Expected-Last-Subject-Sequence", String(options.expectLastSubjectSequence));
    return new Promise<PublishAck>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject, deadline: Date.now() + this.timeoutMs, subject });
      try {
        this.nc.publish(subject, data, { reply: `${this.inbox}.${id}`, headers: h });
      } catch (e) {
        this.waiting.delete(id);
        reject(e as Error);
      }
    });
  }

  /** Fails whatever still waits for its ack. */
  close(): void {
    clearInterval(this.sweeper);
    this.subscription.unsubscribe();
    for (const [id, w] of this.waiting) {
      this.waiting.delete(id);
      w.reject(new Error(`publish to ${w.subject}: the publisher closed before its ack`));
    }
  }

  private settle(msg: Msg): void {
    const id = Number(msg.subject.slice(this.inbox.length + 1));
    const w = this.waiting.get(id);
    if (!w) return; // too late: it was failed as timed out
    this.waiting.delete(id);
    if (msg.data.length === 0 && msg.headers?.code === 503) return w.reject(new Error(`publish to ${w.subject}: no stream takes it (no responders)`));
    let ack: { stream?: string; seq?: number; duplicate?: boolean; error?: { code: number; err_code: number; description: string } };
    try {
      ack = msg.json();
    } catch (e) {
      return w.reject(new Error(`publish to ${w.subject}: unreadable ack: ${(e as Error).message}`));
    }
    if (ack.error) return w.reject(new PublishRefused(ack.error.code, ack.error.err_code, ack.error.description));
    w.resolve({ stream: ack.stream ?? "", seq: ack.seq ?? 0, duplicate: ack.duplicate ?? false });
  }

  private expire(): void {
    const now = Date.now();
    // Ids grow with time, and so do deadlines: the overdue ones come first.
    for (const [id, w] of this.waiting) {
      if (w.deadline > now) break;
      this.waiting.delete(id);
      w.reject(new Error(`publish to ${w.subject}: no ack within ${this.timeoutMs} ms`));
    }
  }
}

interface Waiting {
  resolve: (ack: PublishAck) => void;
  reject: (e: Error) => void;
  deadline: number;
  subject: string;
}

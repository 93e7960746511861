import { AckPolicy, DeliverPolicy, type JetStreamClient, type JetStreamManager, type JsMsg } from "@nats-io/jetstream";
import { consumeInBatches, type BatchLoop } from "./batched-consumer.js";

export interface SupervisedSpec {
  name: string;
  stream: string;
  filter: string;
  maxBatch: number;
  maxAckPending: number;
  /** Rebuilds the component from its durable state; returns the stream sequence to resume at. */
  recover(): Promise<number>;
  handle(batch: JsMsg[]): Promise<void>;
  log?: (message: string) => void;
}

const ns = (ms: number) => ms * 1_000_000;

/**
 * Runs a stateful stream consumer crash-only: on any failure it stops, rebuilds the component
 * from its own durable state (`recover`) and resumes from the position that state records. The
 * JetStream consumer is re-created at that position each time, so what was processed but not
 * checkpointed is simply processed again: the component's checkpoint, not the consumer's ack
 * floor, is the truth.
 */
export class SupervisedConsumer {
  private loop?: BatchLoop;
  private stopped = false;
  private failing?: Promise<void>;
  private attempt = 0;

  constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly spec: SupervisedSpec,
  ) {}

  async start(): Promise<void> {
    const from = await this.spec.recover();
    await this.jsm.consumers.delete(this.spec.stream, this.spec.name).catch(() => undefined);
    await this.jsm.consumers.add(this.spec.stream, {
      durable_name: this.spec.name,
      filter_subject: this.spec.filter,
      ack_policy: AckPolicy.All,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: Math.max(1, from),
      max_ack_pending: this.spec.maxAckPending,
      ack_wait: ns(60_000),
    });
    const consumer = await this.js.consumers.get(this.spec.stream, this.spec.name);
    let delivered = 0;
    this.loop = await consumeInBatches(
      consumer,
      this.spec.maxBatch,
      async (batch) => {
        if (this.failing) return;
        try {
          // Strictly in order, or not at all: a delivery the client never received (a pull in
          // flight when the connection dropped) comes back only after ack_wait, behind later
          // messages. A gap in the consumer's delivery sequence means exactly that: recover.
          for (const m of batch) {
            if (m.info.deliverySequence !== ++delivered) {
              throw new Error(`delivery ${m.info.deliverySequence} arrived, ${delivered} expected: messages were lost in flight`);
            }
          }
          await this.spec.handle(batch);
          this.attempt = 0;
        } catch (e) {
          this.fail(e);
        }
      },
      (e) => this.fail(e),
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop?.stop();
  }

  /** Crash-only recovery: drop everything in memory, start again from durable state, with backoff. */
  private fail(error: unknown): void {
    if (this.failing || this.stopped) return;
    (this.spec.log ?? console.error)(`${this.spec.name}: ${(error as Error).message ?? error}; recovering`);
    this.failing = (async () => {
      const loop = this.loop;
      this.loop = undefined;
      // Stopping the loop waits for the batch in hand, which may be the one that failed: don't await it.
      void loop?.stop().catch(() => undefined);
      while (!this.stopped) {
        await new Promise((r) => setTimeout(r, Math.min(5_000, 100 * 2 ** this.attempt++)));
        try {
          this.failing = undefined;
          await this.start();
          return;
        } catch (e) {
          this.failing = Promise.resolve();
          (this.spec.log ?? console.error)(`${this.spec.name}: recovery failed: ${(e as Error).message}`);
        }
      }
    })();
  }
}

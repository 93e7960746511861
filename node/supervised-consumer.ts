import { AckPolicy, DeliverPolicy, type JetStreamClient, type JetStreamManager, type JsMsg } from "@nats-io/jetstream";
import { consumeInBatches, type BatchLoop } from "./batched-consumer.js";

export interface SupervisedSpec {
  name: string;
  stream: string;
  filter: string;
  maxBatch: number;
  /** At most this many payload bytes per batch (see `consumeInBatches`). */
  maxBatchBytes?: number;
  maxAckPending: number;
  /** Rebuilds the component from its durable state; returns the stream sequence to resume at. */
  recover(): Promise<number>;
  handle(batch: JsMsg[]): Promise<void>;
  /** The consumer is (re)created and delivering; `pending` messages wait in the stream for it. */
  started?(pending: number): void;
  /** It failed: nothing is delivered until it has recovered and `started` again. */
  stalled?(): void;
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
  /** Bumped at every (re)start and failure: a loop from an older generation is ignored. */
  private generation = 0;
  private recovering = false;
  private attempt = 0;

  constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly spec: SupervisedSpec,
  ) {}

  async start(): Promise<void> {
    const generation = ++this.generation;
    const from = await this.spec.recover();
    await this.jsm.consumers.delete(this.spec.stream, this.spec.name).catch(() => undefined);
    const info = await this.jsm.consumers.add(this.spec.stream, {
      durable_name: this.spec.name,
      filter_subject: this.spec.filter,
      ack_policy: AckPolicy.All,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: Math.max(1, from),
      max_ack_pending: this.spec.maxAckPending,
      ack_wait: ns(60_000),
    });
    const consumer = await this.js.consumers.get(this.spec.stream, this.spec.name);
    this.spec.started?.(info.num_pending);
    let delivered = 0;
    this.recovering = false;
    this.loop = await consumeInBatches(
      consumer,
      this.spec.maxBatch,
      async (batch) => {
        if (generation !== this.generation) return;
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
          this.fail(e, generation);
        }
      },
      (e) => this.fail(e, generation),
      this.spec.maxBatchBytes,
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.generation++;
    await this.loop?.stop();
  }

  /**
   * The component failed outside `handle` (say, a write it finished in the background): recover
   * as if `handle` had thrown. Ignored while stopped or already recovering.
   */
  crash(error: unknown): void {
    this.fail(error, this.generation);
  }

  /**
   * Crash-only recovery: the failed loop is retired at once (its generation is over), and once it
   * has wound down the component is rebuilt from durable state and started again, with backoff.
   * Never two loops feeding one component.
   */
  private fail(error: unknown, generation: number): void {
    if (generation !== this.generation || this.recovering || this.stopped) return;
    this.recovering = true;
    this.generation++;
    this.spec.stalled?.();
    const log = this.spec.log ?? console.error;
    log(`${this.spec.name}: ${(error as Error).message ?? error}; recovering`);
    const failed = this.loop;
    this.loop = undefined;
    void (async () => {
      // Called from inside the failed loop's handler: wait for it without blocking it.
      await new Promise((r) => setImmediate(r));
      await failed?.stop().catch(() => undefined);
      while (!this.stopped) {
        await new Promise((r) => setTimeout(r, Math.min(5_000, 100 * 2 ** this.attempt++)));
        if (this.stopped) return;
        try {
          await this.start();
          return;
        } catch (e) {
          log(`${this.spec.name}: recovery failed: ${(e as Error).message}`);
        }
      }
    })();
  }
}

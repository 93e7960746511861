import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import type { Router } from "../actors/router.js";
import type { PartitionMark } from "../actors/window-shard.js";
import type { AckedPublisher } from "./acked-publisher.js";
import { PartitionIngest, type IngestCounters, type IngestSettings } from "./partition-ingest.js";
import type { RouterLog } from "./router-log.js";
import { streams, subjects } from "./streams.js";
import { SupervisedConsumer } from "./supervised-consumer.js";

/**
 * At most this much input per router batch. A batch's router-log record (its ids) and its mailbox
 * messages (one partial per event when every event has its own series) grow with it, and each must
 * stay under NATS's 1 MiB max payload: 1000 protobuf batches of 1000 events exceeded it, the
 * router failed, recovered and picked an equally large batch again.
 */
const routerBatchBytes = 512 * 1024;

interface HostedPartition {
  ingest: PartitionIngest;
  consumer: SupervisedConsumer;
}

/**
 * The event partitions this node routes right now. A partition's router keeps nothing on this
 * node: it recovers from the router log in JetStream, so whichever node owns it next picks it up.
 */
export class PartitionHost {
  readonly partitions = new Map<number, HostedPartition>();

  constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly publisher: AckedPublisher,
    private readonly routerLog: RouterLog,
    private readonly router: Router,
    private readonly settings: IngestSettings & { maxBatch: number },
    private readonly counters: IngestCounters,
    private readonly log: (message: string) => void,
  ) {}

  async start(partition: number): Promise<void> {
    const ingest = new PartitionIngest(partition, this.js, this.publisher, this.routerLog, this.router, this.settings, this.counters);
    const consumer = new SupervisedConsumer(this.js, this.jsm, {
      name: `router-${partition}`,
      stream: streams.events,
      filter: subjects.events(partition),
      maxBatch: this.settings.maxBatch,
      maxBatchBytes: routerBatchBytes,
      maxAckPending: 20_000,
      recover: () => ingest.recover(),
      handle: (batch) => ingest.handle(batch),
      started: (pending) => ingest.started(pending),
      stalled: () => ingest.stalled(),
      log: this.log,
    });
    this.partitions.set(partition, { ingest, consumer });
    await consumer.start();
  }

  /** Stops routing: the batch in flight finishes (its output is out) before this resolves. */
  async stop(partition: number): Promise<void> {
    const hosted = this.partitions.get(partition);
    this.partitions.delete(partition);
    await hosted?.consumer.stop();
  }

  private confirming = false;

  /**
   * Asks the consumers of quiet partitions whether anything still waits for them, so those that
   * are caught up can be idle (and stop holding the watermark back).
   */
  async confirmQuiet(): Promise<void> {
    if (this.confirming) return;
    this.confirming = true;
    try {
      await Promise.all(
        [...this.partitions]
          .filter(([, { ingest }]) => ingest.needsConfirmation)
          .map(async ([p, { ingest }]) => {
            const asked = ingest.batchesBegun;
            const info = await this.jsm.consumers.info(streams.events, `router-${p}`).catch(() => undefined);
            if (info) ingest.confirmCaughtUp(info.num_pending, info.num_ack_pending, asked);
          }),
      );
    } finally {
      this.confirming = false;
    }
  }

  /** Where each partition routed here stands in event time. */
  /** Bytes of the routers' de-duplication tables. */
  get dedupBytes(): number {
    let bytes = 0;
    for (const { ingest } of this.partitions.values()) bytes += ingest.dedupBytes;
    return bytes;
  }

  marks(now: number): [number, PartitionMark][] {
    return [...this.partitions].map(([p, { ingest }]) => [p, ingest.mark(now)]);
  }
}

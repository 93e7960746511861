import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import type { Router } from "../actors/router.js";
import type { PartitionMark } from "../actors/window-shard.js";
import { PartitionIngest, type IngestCounters, type IngestSettings } from "./partition-ingest.js";
import type { RouterLog } from "./router-log.js";
import { streams, subjects } from "./streams.js";
import { SupervisedConsumer } from "./supervised-consumer.js";

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
    private readonly routerLog: RouterLog,
    private readonly router: Router,
    private readonly settings: IngestSettings & { maxBatch: number },
    private readonly counters: IngestCounters,
    private readonly log: (message: string) => void,
  ) {}

  async start(partition: number): Promise<void> {
    const ingest = new PartitionIngest(partition, this.js, this.routerLog, this.router, this.settings, this.counters);
    const consumer = new SupervisedConsumer(this.js, this.jsm, {
      name: `router-${partition}`,
      stream: streams.events,
      filter: subjects.events(partition),
      maxBatch: this.settings.maxBatch,
      maxAckPending: 20_000,
      recover: () => ingest.recover(),
      handle: (batch) => ingest.handle(batch),
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

  /** Where each partition routed here stands in event time. */
  marks(now: number): [number, PartitionMark][] {
    return [...this.partitions].map(([p, { ingest }]) => [p, ingest.mark(now)]);
  }
}

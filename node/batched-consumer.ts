import type { Consumer, ConsumerMessages, JsMsg } from "@nats-io/jetstream";

export interface BatchLoop {
  /** Stops pulling and waits for the batch in hand to finish. */
  stop(): Promise<void>;
}

/**
 * Pulls from a consumer and hands over messages in batches: whatever has arrived while the
 * previous batch was being handled, up to `maxBatch`. Under load batches grow by themselves;
 * when quiet, a single message goes through at once. The handler acks.
 */
export async function consumeInBatches(
  consumer: Consumer,
  maxBatch: number,
  handle: (batch: JsMsg[]) => Promise<void>,
  onError: (e: unknown) => void,
): Promise<BatchLoop> {
  const messages: ConsumerMessages = await consumer.consume({ max_messages: Math.max(1000, maxBatch) });
  const done = (async () => {
    let batch: JsMsg[] = [];
    for await (const m of messages) {
      batch.push(m);
      if (batch.length < maxBatch && messages.getPending() > 0) continue;
      try {
        await handle(batch);
      } catch (e) {
        // Not acked: JetStream redelivers the batch after ack_wait.
        onError(e);
      }
      batch = [];
    }
  })();
  return {
    async stop() {
      messages.stop();
      await done;
    },
  };
}

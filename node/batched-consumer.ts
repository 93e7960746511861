import type { Consumer, ConsumerMessages, JsMsg } from "@nats-io/jetstream";

export interface BatchLoop {
  /** Stops pulling and waits for the batch in hand to finish. */
  stop(): Promise<void>;
}

/**
 * Pulls from a consumer and hands over messages in batches: whatever arrived while the previous
 * batch was being handled, up to `maxBatch`. Under load batches grow by themselves; when quiet, a
 * single message goes through at once. The handler acks; unacked work is bounded by the
 * consumer's `max_ack_pending`, so the buffer here is bounded too.
 */
export async function consumeInBatches(
  consumer: Consumer,
  maxBatch: number,
  handle: (batch: JsMsg[]) => Promise<void>,
  onError: (e: unknown) => void,
  /** At most this many payload bytes per batch (at least one message): what a batch's output grows with. */
  maxBatchBytes?: number,
): Promise<BatchLoop> {
  let buffer: JsMsg[] = [];
  let running: Promise<void> | undefined;
  let stopped = false;

  const drain = async () => {
    while (buffer.length > 0 && !stopped) {
      let n = Math.min(buffer.length, maxBatch);
      if (maxBatchBytes !== undefined) {
        let bytes = buffer[0]!.data.length;
        for (let i = 1; i < n; i++) {
          bytes += buffer[i]!.data.length;
          if (bytes > maxBatchBytes) {
            n = i;
            break;
          }
        }
      }
      const batch = n === buffer.length ? buffer : buffer.slice(0, n);
      buffer = n === buffer.length ? [] : buffer.slice(n);
      try {
        await handle(batch);
      } catch (e) {
        // Not acked: JetStream redelivers these after ack_wait.
        onError(e);
      }
    }
    running = undefined;
  };

  const messages: ConsumerMessages = await consumer.consume({
    max_messages: Math.max(1000, maxBatch),
    callback: (m) => {
      buffer.push(m);
      running ??= drain();
    },
  });
  return {
    async stop() {
      stopped = true;
      messages.stop();
      await running;
    },
  };
}

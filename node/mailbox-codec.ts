import type { WindowPartial } from "../actors/router.js";
import type { PartitionMark } from "../actors/window-shard.js";
import { encodeStates } from "../actors/window-actor.js";

/**
 * What travels on a shard's mailbox subject: the partials of one router batch, or the
 * watermarks of a node's partitions. Both are in-band, so a shard sees a partition's watermark
 * only after every partial that contributed to it.
 */
export type MailboxMessage =
  /** `first`..`last`: the event stream sequences of the router batch, so a replayed batch is recognised. */
  | {
      type: "partials";
      partition: number;
      /** Who routed it, for de-duplication: the partition's router, or a backfill (`bf:<rule>@<activeFrom>:<partition>`). */
      origin?: string;
      first: number;
      last: number;
      partials: WindowPartial[];
    }
  | { type: "marks"; marks: [partition: number, PartitionMark][] }
  /** Partials another shard produced for this one's windows, de-duplicated by their message id. */
  | { type: "forwarded"; partials: WindowPartial[] };

/**
 * JSON for now (partials always hold at least one value, so no infinities); aggregate states go
 * as base64 of their binary encoding. A binary envelope is a later step.
 */
export function encodeMailbox(message: MailboxMessage): Uint8Array {
  if (message.type === "partials" || message.type === "forwarded") {
    const partials = message.partials.map((p) => (p.states ? { ...p, states: encodeStates(p.states) } : p));
    return Buffer.from(JSON.stringify({ ...message, partials }));
  }
  // -Infinity (no event seen yet) is not JSON: it travels as null.
  const marks = message.marks.map(([p, m]) => [p, Number.isFinite(m.watermark) ? m.watermark : null, m.idle]);
  return Buffer.from(JSON.stringify({ type: "marks", marks }));
}

export function decodeMailbox(bytes: Uint8Array): MailboxMessage {
  const message = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString());
  if (message.type === "partials" || message.type === "forwarded") {
    // An empty partial's ±Infinity travelled as null.
    for (const p of message.partials as WindowPartial[]) {
      if (p.agg.min === null) p.agg.min = Infinity;
      if (p.agg.max === null) p.agg.max = -Infinity;
    }
    return message as MailboxMessage;
  }
  return {
    type: "marks",
    marks: (message.marks as [number, number | null, boolean][]).map(([p, wm, idle]) => [p, { watermark: wm ?? -Infinity, idle }]),
  };
}

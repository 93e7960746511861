import { headers } from "@nats-io/transport-node";
import type { JetStreamClient } from "@nats-io/jetstream";
import type { Reject } from "../actors/event.js";
import { subjects } from "./streams.js";

/** Where a reject came from, so it can be inspected and replayed. */
export interface RejectOrigin {
  subject: string;
  /** A deterministic id (stream position + index) so a redelivered batch does not file it twice. */
  id: string;
}

/** Header names on DLQ messages; the payload is the original bytes. */
export const dlqHeaders = {
  reason: "Tally-Reason",
  detail: "Tally-Detail",
  subject: "Tally-Subject",
  at: "Tally-Rejected-At",
} as const;

/** Files rejects in the DLQ stream. Resolves once JetStream has stored every one of them. */
export async function fileRejects(js: JetStreamClient, rejects: { reject: Reject; origin: RejectOrigin }[]): Promise<void> {
  await Promise.all(
    rejects.map(({ reject, origin }) => {
      const h = headers();
      h.set(dlqHeaders.reason, reject.reason);
      h.set(dlqHeaders.detail, reject.detail.replace(/[\r\n]+/g, " ").slice(0, 500));
      h.set(dlqHeaders.subject, origin.subject);
      h.set(dlqHeaders.at, new Date().toISOString());
      return js.publish(subjects.dlq(reject.reason), reject.raw, { headers: h, msgID: `dlq:${origin.id}` });
    }),
  );
}

import type { JetStreamClient, JsMsg } from "@nats-io/jetstream";
import { fileRejects } from "./dead-letters.js";

/**
 * Telemetry that reached the events stream without a partition: its subject is not
 * `telemetry.<source>.<kind>`, or the server runs without Tally's subject mapping. It is never
 * aggregated, and never silently lost: every message goes to the DLQ with the reason.
 */
export async function fileStrays(js: JetStreamClient, batch: JsMsg[]): Promise<number> {
  await fileRejects(
    js,
    batch.map((m) => ({
      reject: {
        reason: "bad_subject",
        detail:
          m.subject.split(".").length === 3
            ? "the NATS server has no Tally partition mapping for telemetry.*.* (see `tally nats-config`)"
            : "telemetry subjects are telemetry.<source>.<kind>",
        raw: m.data,
      },
      origin: { subject: m.subject, id: `stray:${m.seq}` },
    })),
  );
  return batch.length;
}

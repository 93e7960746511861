import { createHash } from "node:crypto";
import type { WindowResult } from "../actors/window-result.js";

/** One message of final and corrected results: a JSON array of them, all of one results subject. */
export interface FinalBatch {
  subject: string;
  body: string;
  /** `Nats-Msg-Id`: derived from the (window key, revision) of every result in it, in order. */
  id: string;
  results: number;
}

/**
 * Final and corrected results leave a shard in batches (README, "Results"): one message per
 * results subject holding up to `maxChars` of JSON (a JSON array), in the order they were emitted,
 * instead of one JetStream publish (with its message id, ack and promise) per window. When a
 * minute closes at 200k windows, that was 200k messages stored by the server, acked to the node,
 * and delivered to, parsed and acked by every node's results consumer.
 *
 * The batch's message id hashes the (window key, revision) of its results, so JetStream drops
 * the same batch sent twice; a replay after a recovery generally cuts its batches differently
 * (they follow the event loop's turns), so the sinks drop a (window key, revision) they have
 * already (`ResultsStore`: `duplicate`).
 */
export function finalBatches(results: readonly WindowResult[], subjectOf: (result: WindowResult) => string, maxChars: number): FinalBatch[] {
  const bySubject = new Map<string, WindowResult[]>();
  for (const result of results) {
    const subject = subjectOf(result);
    let list = bySubject.get(subject);
    if (!list) bySubject.set(subject, (list = []));
    list.push(result);
  }
  const out: FinalBatch[] = [];
  for (const [subject, list] of bySubject) {
    let body = "";
    let ids = "";
    let n = 0;
    const send = () => {
      out.push({ subject, body: body + "]", id: `b:${createHash("sha1").update(ids).digest("base64url")}`, results: n });
      body = "";
      ids = "";
      n = 0;
    };
    for (const result of list) {
      const json = JSON.stringify(result);
      if (body.length > 0 && body.length + json.length + 2 > maxChars) send();
      body = body.length === 0 ? "[" + json : body + "," + json;
      ids += `${result.key}#${result.revision}\n`;
      n++;
    }
    if (n > 0) send();
  }
  return out;
}

/**
 * Whether a results message may hold a final or corrected result, without parsing it: every such
 * result has `"status":"final"` or `"status":"corrected"` unescaped in its JSON. A batch of
 * provisional results whose dimensions happen to read so (a tag named `status`) answers true as
 * well: it is then parsed for nothing, never misread.
 */
export function mayHoldFinals(text: string): boolean {
  return text.includes('"status":"final"') || text.includes('"status":"corrected"');
}

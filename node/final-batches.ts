import { createHash } from "node:crypto";
import type { EncodedResult, WindowResult } from "../actors/window-result.js";

/**
 * Between two results of a batch of finals: a comma and a newline, still one JSON array, but a
 * JSON text never holds a raw newline inside a string, so a reader can cut the message into its
 * results' own JSON texts without parsing it (`resultTexts`) and store each as it came.
 */
export const resultSeparator = ",\n";

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
export function finalBatches(
  results: readonly (WindowResult | EncodedResult)[],
  subjectOf: (result: Pick<WindowResult, "metric" | "window">) => string,
  maxChars: number,
): FinalBatch[] {
  const bySubject = new Map<string, (WindowResult | EncodedResult)[]>();
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
      // A row's final comes as its JSON already (`EncodedResult`).
      const json = "json" in result ? result.json : JSON.stringify(result);
      if (body.length > 0 && body.length + json.length + 3 > maxChars) send();
      body = body.length === 0 ? "[" + json : body + resultSeparator + json;
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

/**
 * The results of a message on a results subject, each with its own JSON text as bytes of `data`
 * (no copy) when the message is cut by `resultSeparator` (a batch of finals), so a store can keep
 * a result as it came rather than stringify it again (README, "Many windows"). Each piece is
 * parsed on its own: if every piece is valid JSON, every separator was between two top-level
 * elements (one inside a nested object or array would leave a piece unbalanced), so the pieces
 * are the results. Otherwise (a message of another shape) the whole is parsed, without texts.
 */
export function resultTexts(data: Uint8Array, decoded?: string): { results: WindowResult[]; texts?: Uint8Array[] } {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (buf[0] !== 0x5b || buf[buf.length - 1] !== 0x5d) return { results: wholeOf(buf) };
  // `data` as text, if the caller has it: when all ASCII (as long as its bytes), a piece is parsed
  // from a slice of it, not decoded again.
  const text = decoded !== undefined && decoded.length === buf.length ? decoded : undefined;
  const results: WindowResult[] = [];
  const texts: Uint8Array[] = [];
  let from = 1;
  for (;;) {
    const cut = buf.indexOf(separatorBytes, from);
    const to = cut < 0 ? buf.length - 1 : cut;
    const piece = buf.subarray(from, to);
    let result: WindowResult;
    try {
      result = JSON.parse(text !== undefined ? text.slice(from, to) : piece.toString()) as WindowResult;
    } catch {
      return { results: wholeOf(buf) };
    }
    if (typeof result !== "object" || result === null || Array.isArray(result)) return { results: wholeOf(buf) };
    results.push(result);
    texts.push(piece);
    if (cut < 0) return { results, texts };
    from = cut + separatorBytes.length;
  }
}

const separatorBytes = Buffer.from(resultSeparator);

function wholeOf(buf: Buffer): WindowResult[] {
  const parsed = JSON.parse(buf.toString()) as WindowResult | WindowResult[];
  return Array.isArray(parsed) ? parsed : [parsed];
}

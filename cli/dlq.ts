import { parseArgs } from "node:util";
import { DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { dlqHeaders } from "../node/dead-letters.js";
import { streams } from "../node/streams.js";
import { UsageError } from "./args.js";

const usage = `tally dlq ls --nats URL [--reason R] [--from-seq N] [--limit N] [--json]
tally dlq replay --nats URL [--reason R] [--from-seq N] [--limit N]
  ls lists rejects (sequence, time, reason, subject, detail, payload);
  replay re-publishes each reject's original bytes on its original subject (JetStream-acked),
  e.g. after fixing a rule or the NATS mapping. Event ids de-duplicate a double replay.`;

interface DeadLetter {
  seq: number;
  at: string;
  reason: string;
  subject: string;
  detail: string;
  payload: Uint8Array;
}

/** `tally dlq ls|replay`: inspect and re-inject what the DLQ holds. */
export async function dlq(args: string[]): Promise<void> {
  const [action, ...rest] = args;
  if (action !== "ls" && action !== "replay") throw new UsageError(usage);
  const { values } = parseArgs({
    args: rest,
    options: {
      nats: { type: "string" },
      reason: { type: "string" },
      "from-seq": { type: "string" },
      limit: { type: "string" },
      json: { type: "boolean" },
    },
  });
  if (!values.nats) throw new UsageError("--nats URL is required");
  const limit = values.limit ? Number(values.limit) : action === "ls" ? 100 : Infinity;
  const nc = await connect({ servers: values.nats.split(","), name: "tally-dlq" });
  try {
    const letters = await read(nc, values.reason, Number(values["from-seq"] ?? 1), limit);
    if (action === "ls") return list(letters, values.json ?? false);
    const js = jetstream(nc);
    for (const letter of letters) await js.publish(letter.subject, letter.payload);
    console.log(`replayed ${letters.length} reject(s)${values.reason ? ` with reason ${values.reason}` : ""}`);
  } finally {
    await nc.close();
  }
}

async function read(nc: Awaited<ReturnType<typeof connect>>, reason: string | undefined, fromSeq: number, limit: number): Promise<DeadLetter[]> {
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info(streams.dlq);
  const out: DeadLetter[] = [];
  if (info.state.messages === 0 || fromSeq > info.state.last_seq) return out;
  const consumer = await jetstream(nc).consumers.get(streams.dlq, {
    filter_subjects: reason ? `tally.dlq.${reason}` : "tally.dlq.>",
    deliver_policy: DeliverPolicy.StartSequence,
    opt_start_seq: Math.max(fromSeq, info.state.first_seq),
  });
  while (out.length < limit) {
    const m = await consumer.next({ expires: 1_000 });
    if (!m) break;
    out.push({
      seq: m.seq,
      at: m.headers?.get(dlqHeaders.at) ?? "",
      reason: m.headers?.get(dlqHeaders.reason) ?? "",
      subject: m.headers?.get(dlqHeaders.subject) ?? "",
      detail: m.headers?.get(dlqHeaders.detail) ?? "",
      payload: m.data,
    });
    if (m.seq >= info.state.last_seq) break;
  }
  return out;
}

function list(letters: DeadLetter[], json: boolean) {
  for (const l of letters) {
    const payload = Buffer.from(l.payload).toString("utf8");
    if (json) console.log(JSON.stringify({ seq: l.seq, at: l.at, reason: l.reason, subject: l.subject, detail: l.detail, payload }));
    else console.log(`${l.seq}\t${l.at}\t${l.reason}\t${l.subject}\t${l.detail}\t${payload.length > 120 ? payload.slice(0, 117) + "..." : payload}`);
  }
  if (!json) console.error(`${letters.length} reject(s)`);
}

import { appendEventBatch } from "../proto/append-event-batch.js";
import { decodeEventBatch } from "../proto/codec.js";
import type { Reject, TelemetryEvent, ValidationLimits } from "./event.js";
import type { EventColumns, RowGate } from "./event-columns.js";

export interface Decoded {
  events: TelemetryEvent[];
  rejects: Reject[];
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Turns one message from `telemetry.<source>.<kind>` into valid events and rejects. A batch is
 * judged event by event: one bad element is rejected alone, with its own bytes, and the rest
 * goes on. Never throws on any input.
 */
export function decodePayload(
  payload: Uint8Array,
  source: string,
  kind: string,
  protobuf: boolean,
  now: number,
  limits: ValidationLimits,
): Decoded {
  if (payload.byteLength > limits.maxPayloadBytes) {
    return reject("oversized", `payload of ${payload.byteLength} bytes exceeds ${limits.maxPayloadBytes}`, payload);
  }
  if (protobuf) return decodeProtobuf(payload, source, kind, now, limits);
  let doc: unknown;
  try {
    doc = JSON.parse(decoder.decode(payload));
  } catch (e) {
    return reject("invalid_json", (e as Error).message, payload);
  }
  const items = Array.isArray(doc) ? doc : [doc];
  const out: Decoded = { events: [], rejects: [] };
  for (const item of items) {
    const result = validateEvent(item, source, kind, now, limits);
    if ("reason" in result) {
      out.rejects.push({ ...result, raw: items.length === 1 && !Array.isArray(doc) ? payload : encoder.encode(JSON.stringify(item)) });
    } else {
      out.events.push(result);
    }
  }
  return out;
}

/**
 * `decodePayload` for routers: appends the valid events of one message to `columns` (message
 * `message`), each then offered to `gate` (false: drop it, e.g. a duplicate), and returns the
 * rejects. Never throws on any input.
 */
export function decodePayloadInto(
  columns: EventColumns,
  message: number,
  arrival: number,
  protobuf: boolean,
  now: number,
  limits: ValidationLimits,
  gate: RowGate,
): Reject[] {
  const { bytes: payload, source, kind } = columns.messages[message]!;
  if (!protobuf || payload.byteLength > limits.maxPayloadBytes) {
    const decoded = decodePayload(payload, source, kind, protobuf, now, limits);
    decoded.events.forEach((event, i) => {
      columns.appendEvent(event, arrival, message, i);
      if (!gate.admit(columns.length - 1)) columns.pop();
    });
    return decoded.rejects;
  }
  const rejects: Reject[] = [];
  try {
    appendEventBatch(columns, payload, message, { source, kind }, arrival, {
      prepare: gate.prepare?.bind(gate),
      admit: (row) => {
        const problem = checkRow(columns, row, now, limits);
        if (!problem) return gate.admit(row);
        rejects.push({ ...problem, raw: encoder.encode(JSON.stringify(columns.event(row))) });
        return false;
      },
    });
  } catch (e) {
    return [{ reason: "invalid_protobuf", detail: (e as Error).message, raw: payload }];
  }
  return rejects;
}

/** `checkEvent` of a row read from a protobuf batch (its values are numbers already). */
function checkRow(columns: EventColumns, row: number, now: number, limits: ValidationLimits): Problem | undefined {
  const start = columns.valuesStart(row);
  const end = columns.valueEnd[row]!;
  let finite = true;
  for (let v = start; v < end && finite; v++) finite = Number.isFinite(columns.value[v]!);
  const tags = columns.tagEnd[row]! - columns.tagsStart(row);
  return checkLimits(columns.idEnd[row] !== columns.idStart[row], columns.ts[row]!, tags, end - start, finite, now, limits);
}

function decodeProtobuf(payload: Uint8Array, source: string, kind: string, now: number, limits: ValidationLimits): Decoded {
  let batch: TelemetryEvent[];
  try {
    batch = decodeEventBatch(payload, { source, kind });
  } catch (e) {
    return reject("invalid_protobuf", (e as Error).message, payload);
  }
  const out: Decoded = { events: [], rejects: [] };
  for (const event of batch) {
    const problem = checkEvent(event, now, limits);
    if (problem) out.rejects.push({ ...problem, raw: encoder.encode(JSON.stringify(event)) });
    else out.events.push(event);
  }
  return out;
}

type Problem = Omit<Reject, "raw">;

/** Validates one JSON event against the public contract (README, "Event"). */
export function validateEvent(
  item: unknown,
  source: string,
  kind: string,
  now: number,
  limits: ValidationLimits,
): TelemetryEvent | Problem {
  if (!item || typeof item !== "object" || Array.isArray(item)) {
    return { reason: "not_an_object", detail: "an event must be a JSON object" };
  }
  const raw = item as Record<string, unknown>;
  const id = typeof raw.id === "number" ? String(raw.id) : raw.id;
  if (typeof id !== "string" || id.length === 0 || id.length > 256) {
    return { reason: "missing_id", detail: '"id" must be a non-empty string of at most 256 characters' };
  }
  if (raw.ts === undefined || raw.ts === null) return { reason: "missing_ts", detail: '"ts" is required' };
  const ts = typeof raw.ts === "string" ? Date.parse(raw.ts) : raw.ts;
  if (typeof ts !== "number" || !Number.isFinite(ts) || ts < 0) {
    return { reason: "bad_ts", detail: '"ts" must be ms since the epoch or an ISO-8601 string' };
  }
  const tags = raw.tags ?? {};
  if (typeof tags !== "object" || Array.isArray(tags) || !everyValue(tags as Record<string, unknown>, (v) => typeof v === "string")) {
    return { reason: "bad_tags", detail: '"tags" must be an object of string values' };
  }
  const values = raw.values ?? {};
  if (typeof values !== "object" || Array.isArray(values) || !everyValue(values as Record<string, unknown>, (v) => typeof v === "number" && Number.isFinite(v))) {
    return { reason: "bad_values", detail: '"values" must be an object of finite numbers' };
  }
  const event: TelemetryEvent = {
    id,
    ts: Math.floor(ts),
    source,
    kind,
    tags: tags as Record<string, string>,
    values: values as Record<string, number>,
  };
  return checkEvent(event, now, limits) ?? event;
}

/** Limits that apply whatever the encoding. Counts without `Object.keys` (no arrays per event). */
function checkEvent(event: TelemetryEvent, now: number, limits: ValidationLimits): Problem | undefined {
  let tags = 0;
  for (const _ in event.tags) tags++;
  let values = 0;
  let finite = true;
  for (const name in event.values) {
    finite &&= Number.isFinite(event.values[name]);
    values++;
  }
  return checkLimits(Boolean(event.id), event.ts, tags, values, finite, now, limits);
}

/** The limits, in the order they are reported, on what an event's encoding counted. */
function checkLimits(hasId: boolean, ts: number, tags: number, values: number, finite: boolean, now: number, limits: ValidationLimits): Problem | undefined {
  if (!hasId) return { reason: "missing_id", detail: "event without an id" };
  if (ts > now + limits.maxFutureMs) {
    return { reason: "future_ts", detail: `ts ${new Date(ts).toISOString()} is more than ${limits.maxFutureMs} ms ahead of the node clock` };
  }
  if (tags > limits.maxTags) return { reason: "too_many_tags", detail: `more than ${limits.maxTags} tags` };
  if (!finite) return { reason: "bad_values", detail: "values must be finite numbers" };
  if (values > limits.maxValues) return { reason: "bad_values", detail: `more than ${limits.maxValues} values` };
  return undefined;
}

/** `Object.values(o).every(test)` without the array (JSON.parse makes only own, enumerable properties). */
function everyValue(o: Record<string, unknown>, test: (v: unknown) => boolean): boolean {
  for (const key in o) if (!test(o[key])) return false;
  return true;
}

function reject(reason: Reject["reason"], detail: string, raw: Uint8Array): Decoded {
  return { events: [], rejects: [{ reason, detail, raw }] };
}

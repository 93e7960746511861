import type { JsMsg } from "@nats-io/jetstream";
import { decodePayload, type Decoded } from "../actors/decode.js";
import type { ValidationLimits } from "../actors/event.js";

const protobufTypes = new Set(["application/protobuf", "application/x-protobuf"]);

/**
 * Decodes one message of the events stream (`tally.events.<partition>.<source>.<kind>`): JSON,
 * or a protobuf batch when its Content-Type says so. The one reading routers and backfills share.
 */
export function decodeEventMessage(m: JsMsg, now: number, limits: ValidationLimits): Decoded & { source: string; kind: string } {
  const [, , , source = "", kind = ""] = m.subject.split(".");
  return { ...decodePayload(m.data, source, kind, isProtobuf(m), now, limits), source, kind };
}

/** Whether a message of the events stream carries a protobuf batch (its Content-Type says so). */
export function isProtobuf(m: JsMsg): boolean {
  return protobufTypes.has(m.headers?.get("Content-Type") ?? "");
}

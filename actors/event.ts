/** One telemetry event, as robots and services publish it (see README, "Event"). */
export interface TelemetryEvent {
  /** Unique per event; duplicates of an id count once. */
  id: string;
  /** Event time, ms since the epoch: when it happened at the source, not when it arrived. */
  ts: number;
  /** Who emitted it (the `<source>` token of `telemetry.<source>.<kind>`). */
  source: string;
  /** What it is (`status`, `error`, `perf`, ...): the `<kind>` token of the subject. */
  kind: string;
  tags: Record<string, string>;
  values: Record<string, number>;
}

/** Why an input was refused; the DLQ carries it beside the original bytes. */
export type RejectReason =
  | "invalid_json"
  | "invalid_protobuf"
  | "not_an_object"
  | "missing_id"
  | "missing_ts"
  | "bad_ts"
  | "future_ts"
  | "bad_tags"
  | "bad_values"
  | "too_many_tags"
  | "oversized"
  | "too_late"
  /** Published on a subject that is not `telemetry.<source>.<kind>`, or the server lacks Tally's mapping. */
  | "bad_subject";

export interface Reject {
  reason: RejectReason;
  detail: string;
  /** The offending input: the whole payload, or the one element of a batch. */
  raw: Uint8Array;
}

export interface ValidationLimits {
  maxPayloadBytes: number;
  maxTags: number;
  maxValues: number;
  /** Events stamped further than this ahead of the node clock are refused as `future_ts`. */
  maxFutureMs: number;
}

export const defaultLimits: ValidationLimits = {
  maxPayloadBytes: 1 << 20,
  maxTags: 32,
  maxValues: 64,
  maxFutureMs: 5 * 60_000,
};

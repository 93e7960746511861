/** A series whose events are spread over sub-actors ("salted"), for events arriving in [from, until). */
export interface HotSeries {
  metric: string;
  /** The series' dimension values, as in actor keys (JSON of the values in groupBy order). */
  dimsId: string;
  /** How many sub-actors share it. */
  salts: number;
  /** Arrival times (JetStream stored time, ms) the salting applies to. */
  from: number;
  until?: number;
  /** Why: the inbound rate passed the threshold, or an operator said so. */
  reason: "rate" | "configured";
  /** Events per second seen when it was decided. */
  rate?: number;
}
